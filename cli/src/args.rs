//! Parsers for command-line values that the local and the remote commands
//! share: grants, parameters, inputs and sizes.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{Context, bail};
use caisson_host_api::Grants;

pub(crate) fn parse_grants(grants: &[String]) -> anyhow::Result<Grants> {
    let mut out = Grants::default();
    for grant in grants {
        let Some((kind, label)) = grant.split_once('=') else {
            bail!("bad grant `{grant}`: expected `objects=LABEL` or `sql=LABEL`");
        };
        match kind {
            "objects" | "object" | "store" => out = out.with_object_store(label),
            "sql" | "db" => out = out.with_sql(label),
            other => {
                bail!("bad grant `{grant}`: unknown kind `{other}` (expected `objects` or `sql`)")
            }
        }
    }
    Ok(out)
}

pub(crate) fn parse_params(params: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    params
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("bad parameter `{p}`: expected NAME=VALUE"))
        })
        .collect()
}

pub(crate) fn read_input(input: &str) -> anyhow::Result<Vec<u8>> {
    match input.strip_prefix('@') {
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("could not read standard input")?;
            Ok(buf)
        }
        Some(path) => {
            std::fs::read(path).with_context(|| format!("could not read input file {path}"))
        }
        None => Ok(input.as_bytes().to_vec()),
    }
}

/// Parses `1024`, `64KiB`, `64MiB`, `1GiB` (and `K`, `M`, `G`, `KB`, ...
/// as the same binary units).
pub(crate) fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("bad size `{text}`"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("bad size unit in `{text}` (use KiB, MiB or GiB)")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("size `{text}` is too large"))
}
