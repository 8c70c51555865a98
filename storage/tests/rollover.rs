//! The hourly rollover counter against a real directory: 1000 files per
//! `HH[.n]`, and recovery from what is on disk after a restart.

#![allow(clippy::unwrap_used)]

use mft_common::utc::UtcTime;
use mft_storage::local::LocalBackend;
use mft_storage::{ChatType, Store};

fn now() -> UtcTime {
    UtcTime::from_unix(1_795_669_628) // 2026-11-26T05:07:08Z
}

#[tokio::test]
async fn a_thousand_per_hour_directory_then_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(LocalBackend::new(dir.path()).unwrap());
    let mut dirs = Vec::new();
    for _ in 0..1001 {
        dirs.push(store.allocate_at(ChatType::Im, now()).await.unwrap().dir());
    }
    assert!(dirs[..1000].iter().all(|d| d == "files/im/20261126/05"));
    assert_eq!(dirs[1000], "files/im/20261126/05.1");
    // Another chat type has its own directories.
    let g = store.allocate_at(ChatType::Groupchat, now()).await.unwrap();
    assert_eq!(g.dir(), "files/groupchat/20261126/05");
}

#[tokio::test]
async fn the_counter_is_recovered_from_the_file_server_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let hour = dir.path().join("files/im/20261126/05.2");
    std::fs::create_dir_all(dir.path().join("files/im/20261126/05")).unwrap();
    std::fs::create_dir_all(dir.path().join("files/im/20261126/04.7")).unwrap();
    std::fs::create_dir_all(&hour).unwrap();
    for i in 0..998 {
        std::fs::write(hour.join(format!("20261126-05.2-im-{i:0>22}")), b"x").unwrap();
        // Descriptions and transfers in progress are not files.
        std::fs::write(hour.join(format!("20261126-05.2-im-{i:0>22}.meta")), b"{}").unwrap();
    }
    std::fs::write(hour.join(".20261126-05.2-im-x.data.0.part"), b"x").unwrap();

    // A fresh store, as after a restart.
    let store = Store::new(LocalBackend::new(dir.path()).unwrap());
    let a = store.allocate_at(ChatType::Im, now()).await.unwrap();
    let b = store.allocate_at(ChatType::Im, now()).await.unwrap();
    let c = store.allocate_at(ChatType::Im, now()).await.unwrap();
    assert_eq!(a.dir(), "files/im/20261126/05.2");
    assert_eq!(b.dir(), "files/im/20261126/05.2");
    assert_eq!(c.dir(), "files/im/20261126/05.3");
}
