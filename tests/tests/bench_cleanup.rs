//! `borealis-bench up` starts an echo server, a relay and an agent: stopped
//! with SIGTERM (as a script or CI stops it), or Ctrl-C, it stops every one
//! of them; none is left running.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use borealis_tests::process::binary;

/// Whether process `pid` still runs (a zombie, awaiting its reaper, does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"))
}

fn stops_everything_on(signal: &str) {
    let mut bench = Command::new(binary("borealis-bench"))
        .arg("up")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn borealis-bench up");
    let mut pids = Vec::new();
    let lines = BufReader::new(bench.stdout.take().unwrap()).lines();
    for line in lines.map_while(Result::ok) {
        // "relay pid 1, agent pid 2, echo pid 3"
        if line.starts_with("relay pid ") {
            pids = line.split(", ").filter_map(|part| part.rsplit(' ').next()?.parse::<u32>().ok()).collect();
        }
        if line.contains("stops them") {
            break;
        }
    }
    assert_eq!(pids.len(), 3, "the relay's, the agent's and the echo server's pids were printed");
    assert!(pids.iter().all(|pid| running(*pid)), "{pids:?} run");

    let sent = Command::new("kill").arg(format!("-{signal}")).arg(bench.id().to_string()).status().unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = bench.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "borealis-bench did not stop on {signal}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{signal}: {status}");
    let left: Vec<u32> = pids.into_iter().filter(|pid| running(*pid)).collect();
    for pid in &left {
        let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
    }
    assert!(left.is_empty(), "{signal} left {left:?} running");
}

#[test]
fn bench_up_stops_what_it_started_on_sigterm() {
    stops_everything_on("TERM");
}

#[test]
fn bench_up_stops_what_it_started_on_ctrl_c() {
    stops_everything_on("INT");
}
