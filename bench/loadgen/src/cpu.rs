//! CPU time of a process and its descendants, from /proc.

use std::fs;

/// User and system CPU ticks (1/`CLK_TCK` s) of `pid` and every process below it.
pub(crate) fn ticks(pid: u32) -> (u64, u64) {
    let (mut user, mut system) = (0, 0);
    let mut todo = vec![pid];
    let mut seen = 0;
    while let Some(p) = todo.pop() {
        seen += 1;
        if seen > 256 {
            break;
        }
        if let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) {
            // The command name is in parentheses and may hold spaces: fields
            // are counted after the last ')'. utime and stime are fields 14
            // and 15 of the line, 12 and 13 after the name.
            if let Some((_, rest)) = stat.rsplit_once(')') {
                let f: Vec<&str> = rest.split_whitespace().collect();
                user += f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                system += f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
        let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            if let Ok(children) = fs::read_to_string(task.path().join("children")) {
                todo.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
    (user, system)
}
