"""Jinja2 3.1 with MarkupSafe 3 built from source, without its C speedups."""

import importlib.metadata
import importlib.util
import time

import jinja2
import markupsafe

from caisson import params, task

# Read while building: the component holds the modules, not the
# distributions' metadata files.
MARKUPSAFE = importlib.metadata.version("markupsafe")
SPEEDUPS = importlib.util.find_spec("markupsafe._speedups") is not None


@task
def run() -> dict:
    started = time.time()
    # Hold the instance a while so the test can show both tasks running at once.
    time.sleep(float(params.get("hold_seconds", "0")))
    env = jinja2.Environment(autoescape=True)
    rendered = env.from_string("<p>{{ name }} {{ safe }}</p>").render(
        name="<b>&", safe=markupsafe.Markup("<i>ok</i>")
    )
    return {
        "jinja2": jinja2.__version__,
        "markupsafe": MARKUPSAFE,
        "speedups": SPEEDUPS,
        # 3.1 has no `jinja2.Markup` any more.
        "has_markup": hasattr(jinja2, "Markup"),
        "rendered": rendered,
        "started": started,
        "finished": time.time(),
    }
