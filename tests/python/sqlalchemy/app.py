"""SQLAlchemy Core on a granted SQL source, through caisson.dbapi; and the
marker environment the guest really has, for the resolver's to be checked
against."""

import datetime
import decimal
import os
import platform
import sys

import sqlalchemy as sa

import caisson.sqlalchemy  # noqa: F401  (registers the postgresql, mysql and sqlite +caisson dialects)
from caisson import TaskError, dbapi, task

try:
    import greenlet  # noqa: F401

    HAS_GREENLET = True
except ImportError:
    HAS_GREENLET = False


def environment() -> dict:
    v = sys.implementation.version
    suffix = "" if v.releaselevel == "final" else v.releaselevel[0] + str(v.serial)
    return {
        "implementation_name": sys.implementation.name,
        "implementation_version": f"{v.major}.{v.minor}.{v.micro}{suffix}",
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_python_implementation": platform.python_implementation(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    }


def core(request: dict) -> dict:
    url = f"{request['dialect']}+caisson://{request['db']}"
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    orders = sa.Table(
        request["table"],
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("customer", sa.String(40), nullable=False),
        sa.Column("amount", sa.Numeric(12, 2), nullable=False),
        sa.Column("paid", sa.Boolean, nullable=False),
        sa.Column("placed", sa.DateTime, nullable=False),
    )
    placed = datetime.datetime(2026, 12, 1, 9, 30)
    with engine.begin() as conn:
        meta.create_all(conn)
        conn.execute(
            orders.insert(),
            [
                {"id": i, "customer": f"c{i % 3}", "amount": decimal.Decimal(f"{i}.25"),
                 "paid": i % 2 == 0, "placed": placed + datetime.timedelta(days=i)}
                for i in range(1, 10)
            ],
        )
    with engine.begin() as conn:
        updated = conn.execute(
            orders.update().where(orders.c.customer == "c0").values(paid=True)
        ).rowcount
    # A transaction that raises is rolled back.
    try:
        with engine.begin() as conn:
            conn.execute(orders.delete())
            raise RuntimeError("undo")
    except RuntimeError:
        pass
    # A unique violation is the DB-API's IntegrityError, which SQLAlchemy wraps.
    try:
        with engine.begin() as conn:
            conn.execute(orders.insert().values(id=1, customer="dup", amount=0, paid=False, placed=placed))
        duplicate = "inserted"
    except sa.exc.IntegrityError as e:
        duplicate = f"IntegrityError {e.orig.sqlstate}"
    with engine.connect() as conn:
        totals = conn.execute(
            sa.select(orders.c.customer, sa.func.count().label("n"), sa.func.sum(orders.c.amount).label("total"))
            .group_by(orders.c.customer)
            .order_by(orders.c.customer)
        ).all()
        first = conn.execute(sa.select(orders).where(orders.c.id == sa.bindparam("id")), {"id": 2}).one()
        paid = conn.execute(
            sa.select(sa.func.count()).select_from(orders).where(orders.c.paid.is_(True))
        ).scalar_one()
        # The same parameter twice in one statement.
        twice = conn.execute(
            sa.select(orders.c.id).where(
                sa.or_(orders.c.id == sa.bindparam("x"), orders.c.id == sa.bindparam("x") + 1)
            ).order_by(orders.c.id),
            {"x": 4},
        ).scalars().all()
    with engine.begin() as conn:
        meta.drop_all(conn)
    engine.dispose()
    return {
        "updated": updated,
        "duplicate": duplicate,
        "paid": paid,
        "twice": twice,
        "totals": [[c, n, str(t)] for c, n, t in totals],
        "first": {
            "customer": first.customer,
            "amount": str(first.amount),
            "amount_type": type(first.amount).__name__,
            "paid": first.paid,
            "placed": first.placed.isoformat(),
        },
    }


def raw(request: dict) -> dict:
    """The DB-API module on its own."""
    conn = dbapi.connect(request["db"])
    cur = conn.cursor()
    # The database's own placeholders: `$1, $2` on PostgreSQL and SQLite,
    # `?` on MySQL.
    if request.get("mark", "$") == "?":
        cur.execute("SELECT ? + 1 AS n, ? AS s", (41, "x"))
    else:
        cur.execute("SELECT $1 + 1 AS n, $2 AS s", (41, "x"))
    described = [d[0] for d in cur.description]
    row = cur.fetchone()
    conn.commit()
    try:
        cur.execute("SELECT * FROM no_such_table_here")
        missing = "no error"
    except dbapi.DatabaseError as e:
        # PostgreSQL's 42P01 and MySQL's 42S02 are ProgrammingErrors;
        # SQLite has no SQLSTATE for it (HY000), so only a DatabaseError.
        missing = f"{type(e).__name__} {e.sqlstate}"
    conn.rollback()
    try:
        dbapi.connect("not-granted")
        denied = "opened"
    except dbapi.ProgrammingError as e:
        denied = str(e)
    conn.close()
    return {"described": described, "row": list(row), "missing": missing, "denied": denied}


@task
def run(request: dict):
    op = request["op"]
    if op == "env":
        return {"environment": environment(), "greenlet": HAS_GREENLET, "sqlalchemy": sa.__version__}
    if op == "core":
        return core(request)
    if op == "raw":
        return raw(request)
    raise TaskError(f"unknown op {op!r}")
