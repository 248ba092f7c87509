//! Distributions, ratios and the tables they are written as.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use serde_json::{Value, json};

use crate::env;

/// How much work each measurement does.
pub struct Plan {
    pub quick: bool,
    pub instantiate_samples: usize,
    pub compile_samples: usize,
    pub spawn_samples: usize,
    pub compute_bytes: usize,
    pub compute_objects: usize,
    pub compute_samples: usize,
    pub python_samples: usize,
    pub trigger_samples: usize,
    pub throughput_runs: usize,
    pub dag_steps: usize,
    /// Runs of each workflow, one after another.
    pub dag_samples: usize,
    pub io_bytes: u64,
    pub io_samples: usize,
    /// Idle `bench-probe` instances held at once: 10,000 in the full
    /// run, or `CAISSON_BENCH_DENSITY` (the count the issue asks about
    /// takes about a minute on 2 cores and 1 GiB of RSS).
    pub density_instances: usize,
    pub python_density_instances: usize,
    pub sql_samples: usize,
    /// Against the alternatives: samples of a whole process (uv, Caisson).
    pub peer_process_samples: usize,
    /// Word count against `wasmtime run`: bytes, files, samples.
    pub peer_compute_bytes: usize,
    pub peer_compute_objects: usize,
    pub peer_compute_samples: usize,
    /// CSV lines the python-etl comparison loads.
    pub etl_lines: usize,
    /// Idle `uv run` processes held at once.
    pub uv_idle_processes: usize,
}

impl Plan {
    /// The preset for `CAISSON_BENCH_QUICK`, with the counts the
    /// `CAISSON_BENCH_*` variables override; an error names a variable set
    /// to something that is not a positive whole number.
    pub fn from_env() -> Result<Self> {
        let quick = std::env::var("CAISSON_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let mut plan = Self::preset(quick);
        if let Some(n) = env::positive("CAISSON_BENCH_DENSITY")? {
            plan.density_instances = n;
        }
        // More Python runs, for `perf record`.
        if let Some(n) = env::positive("CAISSON_BENCH_PYTHON_SAMPLES")? {
            plan.python_samples = n;
        }
        // More runs for the throughput figures, for `perf record`.
        if let Some(n) = env::positive("CAISSON_BENCH_THROUGHPUT_RUNS")? {
            plan.throughput_runs = n;
        }
        Ok(plan)
    }

    fn preset(quick: bool) -> Self {
        if quick {
            Plan {
                quick,
                instantiate_samples: 500,
                compile_samples: 5,
                spawn_samples: 20,
                compute_bytes: 1 << 20,
                compute_objects: 4,
                compute_samples: 3,
                python_samples: 20,
                trigger_samples: 10,
                throughput_runs: 40,
                dag_steps: 20,
                dag_samples: 2,
                io_bytes: 16 << 20,
                io_samples: 1,
                density_instances: 50,
                python_density_instances: 5,
                sql_samples: 20,
                peer_process_samples: 3,
                peer_compute_bytes: 1 << 20,
                peer_compute_objects: 4,
                peer_compute_samples: 3,
                etl_lines: 1000,
                uv_idle_processes: 2,
            }
        } else {
            Plan {
                quick,
                instantiate_samples: 5000,
                compile_samples: 30,
                spawn_samples: 300,
                compute_bytes: 200 << 20,
                compute_objects: 50,
                compute_samples: 5,
                python_samples: 500,
                trigger_samples: 200,
                throughput_runs: 1000,
                dag_steps: 1000,
                dag_samples: 5,
                io_bytes: 1 << 30,
                io_samples: 2,
                density_instances: 10_000,
                python_density_instances: 100,
                sql_samples: 2000,
                peer_process_samples: 30,
                peer_compute_bytes: 50 << 20,
                peer_compute_objects: 10,
                peer_compute_samples: 10,
                etl_lines: 10_000,
                uv_idle_processes: 10,
            }
        }
    }
}

/// Many timings of one thing.
pub struct Dist {
    pub name: String,
    pub samples: Vec<Duration>,
}

impl Dist {
    pub fn new(name: impl Into<String>, mut samples: Vec<Duration>) -> Self {
        assert!(!samples.is_empty());
        samples.sort();
        Dist {
            name: name.into(),
            samples,
        }
    }

    /// Nearest-rank percentile, `p` in 0..=100.
    pub fn pct(&self, p: f64) -> Duration {
        let n = self.samples.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.samples[rank.clamp(1, n) - 1]
    }

    pub fn p50(&self) -> Duration {
        self.pct(50.0)
    }

    pub fn p99(&self) -> Duration {
        self.pct(99.0)
    }
}

/// `numerator / denominator`, both from this run.
pub struct Ratio {
    pub name: String,
    pub value: f64,
    pub numerator: String,
    pub denominator: String,
}

#[derive(Default)]
pub struct Report {
    pub dists: Vec<Dist>,
    pub ratios: Vec<Ratio>,
    /// Figures that are not durations: `(name, value, samples)`.
    pub values: Vec<(String, f64, usize)>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn dist(&mut self, d: Dist) -> usize {
        println!(
            "  {}: n={} p50={} p99={}",
            d.name,
            d.samples.len(),
            fmt_duration(d.p50()),
            fmt_duration(d.p99())
        );
        self.dists.push(d);
        self.dists.len() - 1
    }

    /// A figure that is not a duration, such as runs per second.
    pub fn value(&mut self, name: &str, value: f64, samples: usize) {
        println!("  {name}: {value:.1}");
        self.values.push((name.into(), value, samples));
    }

    /// A ratio of two figures that are not distributions.
    pub fn plain_ratio(&mut self, name: &str, value: f64, numerator: &str, denominator: &str) {
        println!("  {name}: {}", fmt_ratio(value));
        self.ratios.push(Ratio {
            name: name.into(),
            value,
            numerator: numerator.into(),
            denominator: denominator.into(),
        });
    }

    /// Records `dists[a].pa / dists[b].pb`.
    pub fn ratio(&mut self, name: &str, a: usize, pa: f64, b: usize, pb: f64) {
        let (da, db) = (&self.dists[a], &self.dists[b]);
        let value = da.pct(pa).as_secs_f64() / db.pct(pb).as_secs_f64();
        self.ratios.push(Ratio {
            name: name.into(),
            value,
            numerator: format!("{} p{pa}", da.name),
            denominator: format!("{} p{pb}", db.name),
        });
    }

    pub fn markdown(&self, plan: &Plan) -> String {
        let mut md = String::new();
        md.push_str(&format!(
            "Mode: {}; {} CPUs; {} {}.\n\n",
            if plan.quick { "quick (smoke)" } else { "full" },
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            std::env::consts::OS,
            std::env::consts::ARCH,
        ));
        md.push_str("| Measurement | Samples | p50 | p99 |\n|---|---:|---:|---:|\n");
        for d in &self.dists {
            md.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                d.name,
                d.samples.len(),
                fmt_duration(d.p50()),
                fmt_duration(d.p99())
            ));
        }
        if !self.values.is_empty() {
            md.push_str("\n| Figure | Value | Samples |\n|---|---:|---:|\n");
            for (name, value, samples) in &self.values {
                md.push_str(&format!("| {name} | {value:.1} | {samples} |\n"));
            }
        }
        md.push_str("\n| Ratio | Value | Numerator | Denominator |\n|---|---:|---|---|\n");
        for r in &self.ratios {
            md.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                r.name,
                fmt_ratio(r.value),
                r.numerator,
                r.denominator
            ));
        }
        if !self.notes.is_empty() {
            md.push('\n');
            for n in &self.notes {
                md.push_str(&format!("- {n}\n"));
            }
        }
        md
    }

    pub fn json(&self, plan: &Plan) -> Value {
        let unix_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        json!({
            "suite": "caisson-runtime/suite",
            "mode": if plan.quick { "quick" } else { "full" },
            "unix_time": unix_time,
            "machine": {
                "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
                "os": std::env::consts::OS,
                "arch": std::env::consts::ARCH,
            },
            "distributions": self.dists.iter().map(|d| json!({
                "name": d.name,
                "samples": d.samples.len(),
                "p50_ns": d.p50().as_nanos() as u64,
                "p99_ns": d.p99().as_nanos() as u64,
                "min_ns": d.samples[0].as_nanos() as u64,
                "max_ns": d.samples[d.samples.len() - 1].as_nanos() as u64,
            })).collect::<Vec<_>>(),
            "values": self.values.iter().map(|(name, value, samples)| json!({
                "name": name,
                "value": value,
                "samples": samples,
            })).collect::<Vec<_>>(),
            "ratios": self.ratios.iter().map(|r| json!({
                "name": r.name,
                "value": r.value,
                "numerator": r.numerator,
                "denominator": r.denominator,
            })).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }
}

pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

pub fn fmt_ratio(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}×")
    } else {
        format!("{v:.2}×")
    }
}

/// A process's resident set size, in bytes (`VmRSS`).
pub fn rss_of(pid: u32) -> Option<u64> {
    status_kib(&format!("/proc/{pid}/status"), "VmRSS:").map(|kib| kib << 10)
}

/// This process's memory, in bytes, three ways: `VmRSS` counts a page once
/// per mapping of it, so a copy-on-write image page that 100 instances map
/// counts 100 times; `RssAnon` is private memory only (pages written,
/// heaps, stacks); `Pss` from `smaps_rollup` counts every page once.
pub fn memory_now() -> Option<(u64, u64, u64)> {
    let rss = status_kib("/proc/self/status", "VmRSS:")?;
    let anon = status_kib("/proc/self/status", "RssAnon:")?;
    let pss = status_kib("/proc/self/smaps_rollup", "Pss:")?;
    Some((rss << 10, anon << 10, pss << 10))
}

/// This process's peak resident set size since the last
/// [`reset_peak_rss`], in bytes (`VmHWM`).
pub fn peak_rss() -> Option<u64> {
    status_kib("/proc/self/status", "VmHWM:").map(|kib| kib << 10)
}

/// Resets `VmHWM` to the current RSS (Linux 4.0+), so a later
/// [`peak_rss`] covers only what came after.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn status_kib(path: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
