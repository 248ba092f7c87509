//! Tests the basic path: input, output, params, the log and stdout/stderr
//! capture. Output: `hello, <who>` where `<who>` is param `name` if set, else
//! the input (UTF-8, lossily). Logs `saying hello to <who>` at info, prints
//! `hello on stdout` to stdout and `hello on stderr` to stderr.

use caisson_sdk::{Result, info, params};

#[caisson_sdk::task]
fn run(input: Vec<u8>) -> Result<String> {
    let who = params::get("name").unwrap_or_else(|| String::from_utf8_lossy(&input).into_owned());
    info!("saying hello to {who}");
    println!("hello on stdout");
    eprintln!("hello on stderr");
    Ok(format!("hello, {who}"))
}

fn main() {}
