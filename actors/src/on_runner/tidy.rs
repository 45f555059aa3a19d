//! An idle runner gives memory back.
//!
//! Once a runner process has booted or served and then been quiet for its
//! pool's `release_memory_after` (500 ms by default), it hands back, on a
//! thread of its own (under a millisecond):
//!
//! - the heap the C library keeps after freeing (glibc's `malloc_trim`:
//!   after a burst of megabyte arguments, megabytes stay in its arenas);
//! - the pages of code and read-only data it has mapped (a fault maps
//!   the 16 pages around the one it needs, so a runner maps most of its
//!   executable's code while it boots). Those pages belong to the page cache, shared with
//!   the parent that runs the same file; the runner maps the ones a later
//!   call runs again, at a minor fault per 16 pages.
//!
//! What is left resident is what the runner holds: its heap, stacks and
//! the code its idle loop runs. Only mappings of the executable and its
//! libraries that are private, read-only and unmodified are dropped (a debugger's breakpoint is a
//! modified page: such a mapping is left alone), so nothing is lost: every
//! page reads back from the file.
//!
//! With `idle_clock.rs`, the only module with `unsafe` code: two calls into
//! the C library.
#![allow(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Serve;

/// The thread that gives memory back; stopped when dropped.
#[derive(Debug)]
pub(super) struct Tidy {
    stop: Arc<AtomicBool>,
    thread: std::thread::Thread,
}

impl Drop for Tidy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// Starts giving memory back whenever `serve` has been quiet for `quiet`.
///
/// On a thread of its own, which parks between rounds and is woken only
/// when the last running call ends: after it has dropped the pages, the
/// runner's worker threads sleep on, and nothing but the link's heartbeats
/// maps code again until the next call. (On a worker thread the wake-up
/// would map back the runtime's scheduler code it had just dropped.)
/// `None` when the thread cannot be started: the runner serves as before.
pub(super) fn spawn(serve: Arc<Serve>, quiet: Duration) -> Option<Tidy> {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let handle = std::thread::Builder::new()
        .name("flame-tidy".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut seen = None;
            while serve.settled_blocking(&mut seen, quiet, &stopped) {
                give_back();
            }
        })
        .ok()?;
    Some(Tidy {
        stop,
        thread: handle.thread().clone(),
    })
}

/// Gives back freed heap and mapped code pages now; returns the bytes of
/// the mappings whose pages were dropped.
pub(crate) fn give_back() -> usize {
    let code_bytes = std::fs::read_to_string("/proc/self/smaps")
        .map(|smaps| {
            code_mappings(&smaps)
                .into_iter()
                .map(|(start, len)| unmap_pages(start, len))
                .sum()
        })
        .unwrap_or(0);
    // Last: the list just read is freed by now.
    trim_heap();
    code_bytes
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    // SAFETY: `malloc_trim` only returns free memory of glibc's arenas to
    // the kernel; it takes the arenas' locks itself and touches no live
    // allocation.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

#[cfg(target_os = "linux")]
fn unmap_pages(start: usize, len: usize) -> usize {
    // SAFETY: `code_mappings` returns only private, read-only, executable
    // mappings of files with no anonymous (modified) page: every page of
    // them reads back, unchanged, from the file the mapping holds open.
    // Dropping them changes no byte a thread can read; the next access
    // faults the page in again.
    let done = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    if done == 0 { len } else { 0 }
}

#[cfg(not(target_os = "linux"))]
fn unmap_pages(_start: usize, _len: usize) -> usize {
    0
}

/// The mappings of a `/proc/<pid>/smaps` text whose pages can be dropped:
/// `(start, length)` of every private, read-only (`r-xp` or `r--p`)
/// mapping with no anonymous page and no lock, of a file that is mapped
/// executable somewhere (the executable and its libraries: a data file the
/// application maps is left alone, its pages would cost the next call).
fn code_mappings(smaps: &str) -> Vec<(usize, usize)> {
    struct Mapping<'a> {
        range: Option<(usize, usize)>,
        perms: &'a str,
        /// Device and inode.
        file: Option<(&'a str, &'a str)>,
        clean: bool,
    }
    let mut mappings: Vec<Mapping<'_>> = Vec::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if !first.ends_with(':') {
            // A mapping's header: `start-end perms offset dev inode path`.
            let perms = words.next().unwrap_or("");
            let (dev, inode) = (words.nth(1).unwrap_or(""), words.next().unwrap_or("0"));
            let path = words.next().unwrap_or("");
            let range = first.split_once('-').and_then(|(start, end)| {
                let start = usize::from_str_radix(start, 16).ok()?;
                let end = usize::from_str_radix(end, 16).ok()?;
                (end > start).then_some((start, end - start))
            });
            let file = (inode != "0" && path.starts_with('/')).then_some((dev, inode));
            mappings.push(Mapping {
                range,
                perms,
                file,
                clean: true,
            });
            continue;
        }
        let Some(mapping) = mappings.last_mut() else { continue };
        let value = words.next().unwrap_or("");
        match first {
            // Modified pages (a breakpoint is a private copy of its page):
            // leave the mapping alone. (`Private_Dirty` is not this: it
            // counts page-cache pages not yet written back, as those of an
            // executable just built.)
            "Anonymous:" | "Swap:" if value != "0" => mapping.clean = false,
            // Locked (mlock): leave it too.
            "Locked:" if value != "0" => mapping.clean = false,
            _ => {}
        }
    }
    let executable: Vec<_> = mappings
        .iter()
        .filter(|m| m.perms == "r-xp")
        .filter_map(|m| m.file)
        .collect();
    mappings
        .iter()
        .filter(|m| m.clean && (m.perms == "r-xp" || m.perms == "r--p"))
        .filter(|m| m.file.is_some_and(|file| executable.contains(&file)))
        .filter_map(|m| m.range)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0a00000-55d0c1400000 r-xp 00a00000 fd:01 1234                       /usr/bin/app
Size:              10240 kB
Rss:                7000 kB
Private_Dirty:      7000 kB
Anonymous:             0 kB
Swap:                  0 kB
Locked:                0 kB
VmFlags: rd ex mr mw me
55d0c0000000-55d0c0a00000 r--p 00000000 fd:01 1234                       /usr/bin/app
Anonymous:             0 kB
55d0c1400000-55d0c1500000 r--p 01400000 fd:01 1234                       /usr/bin/app
Size:               1024 kB
Anonymous:           120 kB
Locked:                0 kB
7e0000000000-7e0040000000 r--p 00000000 fd:01 555                        /models/weights.safetensors
Anonymous:             0 kB
55d0c1500000-55d0c1600000 rw-p 01500000 fd:01 1234                       /usr/bin/app
Anonymous:            64 kB
7f0000000000-7f0000100000 r-xp 00028000 fd:01 99                         /usr/lib/libc.so.6 (deleted)
Anonymous:             0 kB
Locked:                0 kB
7f0000200000-7f0000201000 r-xp 00000000 fd:01 77                         /usr/lib/debugged.so
Private_Dirty:         4 kB
Anonymous:             4 kB
7f0000210000-7f0000211000 r-xp 00000000 fd:01 79                         /usr/lib/swapped.so
Anonymous:             0 kB
Swap:                  4 kB
7f0000300000-7f0000301000 r-xp 00000000 fd:01 78                         /usr/lib/locked.so
Anonymous:             0 kB
Locked:                4 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
7ffd00010000-7ffd00011000 r-xp 00000000 00:00 0 
Anonymous:             0 kB
";

    #[test]
    fn only_unmodified_unlocked_code_and_read_only_data_of_executables_is_dropped() {
        assert_eq!(
            code_mappings(SMAPS),
            vec![
                (0x55d0c0a00000, 0xa00000),
                (0x55d0c0000000, 0xa00000),
                (0x7f0000000000, 0x100000)
            ],
        );
    }

    #[test]
    fn a_text_that_is_not_smaps_yields_nothing() {
        assert!(code_mappings("").is_empty());
        assert!(code_mappings("garbage\nmore garbage: 1\n-\n").is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_finds_its_own_code_and_runs_on_after_dropping_it() {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mappings = code_mappings(&smaps);
        assert!(!mappings.is_empty(), "no code mapping found in this test's own smaps");
        assert!(give_back() > 0);
        // The code runs on: every page maps again from the file.
        let sum: u64 = (0..1000u64).map(|i| i.wrapping_mul(31)).sum();
        assert_eq!(sum, 15_484_500);
    }
}
