//! `examples/transcode.rs`, streaming frames from process runners, run as
//! a user runs it: both clips arrive whole with their progress, and the
//! clip it gives up on stops on its runner and frees its slot (B57).

mod support;

use std::process::Command;

use support::examples::example_binary;

#[test]
fn b57_the_transcode_example_streams_every_frame_and_stops_a_dropped_clip() {
    let output = Command::new(example_binary("transcode"))
        .output()
        .expect("the example runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    for clip in ["clip-a", "clip-b"] {
        assert!(stdout.contains(&format!("{clip}: 25% 50% 75% 100%")), "{stdout}");
        assert!(stdout.contains(&format!("{clip}: 96 frames, 28.1 MiB raw")), "{stdout}");
    }
    assert!(
        stdout.contains("clip-c: stopped after 8 of 10000 frames; slots busy once it ended: 0"),
        "{stdout}"
    );
}
