//! The orphan sweep against the real engine (B38): two parents sharing an
//! engine and a pool name never remove each other's runners, while the
//! containers of a parent that is gone still go. Where no engine answers
//! these tests skip with a printed reason, unless `FLAME_REQUIRE_DOCKER` is
//! set (CI), where they fail.

#![cfg(feature = "docker")]

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, StartContainerOptions};
use ractor_flame::Pool;
use ractor_flame::docker::{DockerBackend, Image, LABEL_MANAGED, LABEL_PARENT, LABEL_PARENT_PROCESS, LABEL_POOL};
use support::docker::{ParentProcess, backend, containers, engine, running};
use support::functions::Echo;
use support::{config, eventually, key};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b38_two_parents_with_one_pool_name_both_finish_their_calls() {
    let Some(docker) = engine("b38_two_parents_with_one_pool_name_both_finish_their_calls").await else {
        return;
    };
    let name = format!("test-twins-{}", key());
    let exe = Path::new(support::runner_exe());
    let mut first = ParentProcess::spawn(exe, &["parent", "docker-work", &name, "200"]);
    first.until("ready", WAIT).await;
    let firsts = running(&docker, &name).await;
    assert_eq!(firsts.len(), 2, "the first parent's runners");
    // The second starts while the first works: its start-up sweep sees the
    // first's running containers under the same pool name.
    let mut second = ParentProcess::spawn(exe, &["parent", "docker-work", &name, "200"]);
    second.until("ready", WAIT).await;
    second.close_stdin();
    let done = second.until("done", WAIT).await;
    assert_eq!(done, "done 200 0", "the second parent: done <ok> <errors>");
    let now = running(&docker, &name).await;
    for id in &firsts {
        assert!(now.contains(id), "the first parent's runner {id} still runs");
    }
    first.close_stdin();
    let done = first.until("done", WAIT).await;
    let counts: Vec<usize> = done.split(' ').skip(1).map(|n| n.parse().unwrap()).collect();
    assert!(counts[0] >= 200, "{done}");
    assert_eq!(counts[1], 0, "the first parent's calls all succeeded: {done}");
    let _ = first.child.wait().await;
    let _ = second.child.wait().await;
    eventually("no labelled container is left", WAIT, || async {
        containers(&docker, &name).await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b38_a_sigkilled_parent_leaves_no_container_after_three_seconds() {
    let Some(docker) = engine("b38_a_sigkilled_parent_leaves_no_container_after_three_seconds").await else {
        return;
    };
    let name = format!("test-parent-{}", key());
    let mut parent = ParentProcess::spawn(Path::new(support::runner_exe()), &["parent", "docker", &name]);
    parent.until("ready", WAIT).await;
    eventually("two containers run", WAIT, || async {
        running(&docker, &name).await.len() == 2
    })
    .await;
    support::kill(parent.child.id().unwrap(), "KILL");
    let _ = parent.child.wait().await;
    eventually("the orphans are gone", Duration::from_secs(3), || async {
        containers(&docker, &name).await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b38_a_sweep_removes_a_dead_parents_containers_and_keeps_a_live_ones() {
    let Some(docker) = engine("b38_a_sweep_removes_a_dead_parents_containers_and_keeps_a_live_ones").await else {
        return;
    };
    let name = format!("test-sweep-{}", key());
    let sleeper = DockerBackend::new()
        .image(Image::Executable("/bin/sleep".into()))
        .prepare_image()
        .await
        .unwrap();
    let dead = dead_process_key();
    let alive = process_key(std::process::id()).unwrap();
    // A dead parent's container that never started, and one that runs but
    // never connects (it sleeps).
    let never_started = labelled(&docker, &sleeper, &name, Some(&dead), false).await;
    let never_connected = labelled(&docker, &sleeper, &name, Some(&dead), true).await;
    // A live parent's runner (another instance in this very process), and
    // a running one whose parent cannot be checked from here.
    let live = labelled(&docker, &sleeper, &name, Some(&alive), true).await;
    let unknown = labelled(&docker, &sleeper, &name, None, true).await;

    let pool = Pool::start(config(1).name(name.clone()), backend(), &support::functions::registry())
        .await
        .unwrap();
    pool.call::<Echo>("up".into()).await.unwrap();
    eventually(
        "the dead parent's containers are swept",
        Duration::from_secs(3),
        || async {
            let left = ids(&docker, &name).await;
            !left.contains(&never_started) && !left.contains(&never_connected)
        },
    )
    .await;
    // The rule, checked synchronously: nothing else may go.
    assert_eq!(backend().sweep(&[(LABEL_POOL, &name)], None).await.unwrap(), 0);
    let left = ids(&docker, &name).await;
    assert!(left.contains(&live), "a live parent's runner is kept");
    assert!(
        left.contains(&unknown),
        "a running container of an unverifiable parent is kept"
    );
    pool.stop().await;
    for id in [live, unknown] {
        let force = RemoveContainerOptionsBuilder::new().force(true).build();
        docker.remove_container(&id, Some(force)).await.unwrap();
    }
    assert_eq!(containers(&docker, &name).await, 0);
}

/// A container of the sleep image labelled as a runner of pool `name` of
/// another parent instance, with parent process `process`; started or not.
async fn labelled(docker: &Docker, image: &str, pool: &str, process: Option<&str>, start: bool) -> String {
    let mut labels = HashMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_POOL.to_owned(), pool.to_owned()),
        (LABEL_PARENT.to_owned(), key()),
    ]);
    if let Some(process) = process {
        labels.insert(LABEL_PARENT_PROCESS.to_owned(), process.to_owned());
    }
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(vec!["30".to_owned()]),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_owned()),
            auto_remove: Some(true),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    let options = CreateContainerOptionsBuilder::new()
        .name(&format!("flame-test-{}", key()))
        .build();
    let id = docker.create_container(Some(options), body).await.unwrap().id;
    if start {
        docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
            .unwrap();
    }
    id
}

/// Ids of the containers (any state) of pool `name`.
async fn ids(docker: &Docker, pool: &str) -> Vec<String> {
    let list = support::docker::all_labelled(docker, pool).await;
    list.into_iter().filter_map(|c| c.id).collect()
}

/// The parent-process label value of live process `pid`.
fn process_key(pid: u32) -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let boot: String = boot.trim().chars().filter(|c| *c != '-').collect();
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let ns = ns.to_str()?.strip_prefix("pid:[")?.strip_suffix(']')?.to_owned();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let start = stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.to_owned();
    Some(format!("{boot}-{ns}-{pid}-{start}"))
}

/// The label value of a process that ran and is gone.
fn dead_process_key() -> String {
    let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let key = process_key(child.id()).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    key
}
