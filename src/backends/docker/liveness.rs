//! Which parent process owns a container or an image, and whether it still
//! lives: the fact the orphan sweep and the image pruning decide on.
//!
//! A parent process is named by its *process key*: the kernel's boot id,
//! its PID namespace, its PID and its start time (clock ticks after boot,
//! field 22 of `/proc/<pid>/stat`). Another process on the same boot and in
//! the same PID namespace can tell from `/proc` alone whether that process
//! lives: a PID reused by a newer process has another start time. From
//! anywhere else (another host, another container's namespace, a system
//! without `/proc`) the answer is "unknown", and callers must then assume
//! the owner may be alive.

use std::sync::OnceLock;

/// A parent process, as written in labels and tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcessKey {
    /// `/proc/sys/kernel/random/boot_id`, without dashes.
    boot: String,
    /// The inode of `/proc/self/ns/pid`.
    pid_ns: u64,
    pid: u32,
    /// Clock ticks after boot.
    start: u64,
}

/// What this process can know about a [`ProcessKey`]'s owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// Same boot and PID namespace, and that process still runs.
    Alive,
    /// Same boot and PID namespace, and no such process runs (gone, a
    /// zombie, or its PID now belongs to a later process).
    Dead,
    /// Cannot be checked from here.
    Unknown,
}

impl ProcessKey {
    /// This process's key, or `None` where `/proc` cannot tell it.
    pub(crate) fn current() -> Option<&'static ProcessKey> {
        static CURRENT: OnceLock<Option<ProcessKey>> = OnceLock::new();
        CURRENT
            .get_or_init(|| {
                let (boot, pid_ns) = here()?;
                let pid = std::process::id();
                let start = start_time(pid)?;
                Some(ProcessKey {
                    boot,
                    pid_ns,
                    pid,
                    start,
                })
            })
            .as_ref()
    }

    /// `boot-pidns-pid-start`: only `[0-9a-f-]`, so it fits a label value
    /// and an image tag.
    pub(crate) fn encode(&self) -> String {
        format!("{}-{}-{}-{}", self.boot, self.pid_ns, self.pid, self.start)
    }

    /// The inverse of [`encode`](Self::encode).
    pub(crate) fn parse(text: &str) -> Option<ProcessKey> {
        let mut parts = text.split('-');
        let boot = parts.next()?.to_owned();
        let pid_ns = parts.next()?.parse().ok()?;
        let pid = parts.next()?.parse().ok()?;
        let start = parts.next()?.parse().ok()?;
        if parts.next().is_some() || boot.len() != 32 || !boot.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(ProcessKey {
            boot,
            pid_ns,
            pid,
            start,
        })
    }

    /// Whether the owner lives, as far as this process can tell.
    pub(crate) fn liveness(&self) -> Liveness {
        let Some((boot, pid_ns)) = here() else {
            return Liveness::Unknown;
        };
        if boot != self.boot || pid_ns != self.pid_ns {
            return Liveness::Unknown;
        }
        match start_time(self.pid) {
            Some(start) if start == self.start => Liveness::Alive,
            _ => Liveness::Dead,
        }
    }
}

/// This boot's id and this PID namespace's inode.
fn here() -> Option<(String, u64)> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let boot: String = boot.trim().chars().filter(|c| *c != '-').collect();
    // "pid:[4026531836]"
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let ns = ns.to_str()?.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()?;
    (boot.len() == 32).then_some((boot, ns))
}

/// The start time of a live, non-zombie process `pid`.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// Field 22 (start time) of a `/proc/<pid>/stat` line, `None` for a zombie
/// or a dead process. The command name (field 2) may hold spaces and
/// parentheses: fields are counted after its last `)`.
fn parse_stat(stat: &str) -> Option<u64> {
    let after = stat.rsplit_once(')')?.1;
    let mut fields = after.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" || state == "x" {
        return None;
    }
    // After the state (field 3), field 22 is the 19th.
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_dead() {
        let me = ProcessKey::current().expect("linux /proc");
        assert_eq!(me.liveness(), Liveness::Alive);
        assert_eq!(ProcessKey::parse(&me.encode()).as_ref(), Some(me));
        let reused = ProcessKey {
            start: me.start + 1,
            ..me.clone()
        };
        assert_eq!(reused.liveness(), Liveness::Dead);
        let elsewhere = ProcessKey {
            boot: "0".repeat(32),
            ..me.clone()
        };
        assert_eq!(elsewhere.liveness(), Liveness::Unknown);
        let other_ns = ProcessKey {
            pid_ns: me.pid_ns + 1,
            ..me.clone()
        };
        assert_eq!(other_ns.liveness(), Liveness::Unknown);
    }

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "42 (a) b (c) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_stat(line), Some(98765));
        let zombie = "42 (x) Z 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_stat(zombie), None);
        assert_eq!(ProcessKey::parse("nonsense"), None);
    }
}
