//! What the kernel says a process has used, from `/proc`: the service's
//! processes and the client's are measured the same way.

use std::time::Duration;

/// The kernel's unit for a process's CPU times in `/proc/PID/stat`:
/// `USER_HZ`, 100 on every architecture this runs on (it is ABI, whatever
/// the kernel's own tick rate).
const USER_HZ: u64 = 100;

/// The CPU time a process has used so far, user and system, all its
/// threads: fields 14 and 15 of `/proc/PID/stat`, counted after the
/// command name (which may hold spaces and parentheses).
pub(crate) fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 1000 / USER_HZ))
}
