//! One conformance suite, run against every store backend: the local disk
//! and a real OpenSSH sshd as SFTP file server.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use mft_storage::backend::Backend;
use mft_storage::local::LocalBackend;
use mft_storage::sftp::{SftpBackend, SftpSettings};
use mft_storage::{ChatType, FileMeta, Location, Store, StoreError};
use xmpp_tests::sshd::{Sshd, USER};

fn meta(size: u64) -> FileMeta {
    FileMeta {
        real_name: "a.bin".into(),
        content_type: Some("application/x-test".into()),
        size,
        sha256: String::new(),
        uploader: "alice@example.test".into(),
        to: String::new(),
        created: 0,
    }
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 13 % 251) as u8).collect()
}

async fn upload(
    store: &Store,
    loc: &Location,
    body: &[u8],
    size: u64,
) -> Result<mft_storage::StoredFile, StoreError> {
    let mut up = store.begin_upload(loc.clone(), meta(size));
    for piece in body.chunks(100_000) {
        up.write(Bytes::copy_from_slice(piece)).await?;
    }
    up.finish().await
}

async fn read_all(store: &Store, loc: &Location, start: u64, len: u64) -> Vec<u8> {
    let mut rx = store.read(loc, start, len);
    let mut out = Vec::new();
    while let Some(piece) = rx.recv().await {
        out.extend_from_slice(&piece.unwrap());
    }
    out
}

/// Names in the location's directory, temporary files included.
fn names(backend: &dyn Backend, loc: &Location) -> Vec<String> {
    let mut s = backend.session().unwrap();
    let mut n = s.list_dir(&loc.dir()).unwrap_or_default();
    n.sort();
    n
}

async fn suite(store: Store, view: Box<dyn Backend>) {
    // A complete upload: readable whole and in ranges, described, hashed.
    let loc = store.allocate(ChatType::Im).await.unwrap();
    let body = data(3_500_000);
    let stored = upload(&store, &loc, &body, body.len() as u64)
        .await
        .unwrap();
    assert_eq!(stored.path, loc.path());
    let info = store.stat(&loc).await.unwrap();
    assert_eq!(info.size, body.len() as u64);
    let m = info.meta.unwrap();
    assert_eq!(m.content_type.as_deref(), Some("application/x-test"));
    assert_eq!(m.sha256.len(), 64);
    assert_eq!(read_all(&store, &loc, 0, body.len() as u64).await, body);
    assert_eq!(
        read_all(&store, &loc, 1_000_000, 10).await,
        &body[1_000_000..1_000_010]
    );
    assert_eq!(
        names(view.as_ref(), &loc),
        vec![
            loc.resource().to_owned(),
            format!("{}.meta", loc.resource())
        ]
    );

    // Never overwritten.
    let err = upload(&store, &loc, b"other", 5).await.unwrap_err();
    assert!(err.is_already_exists(), "{err}");
    assert_eq!(read_all(&store, &loc, 0, body.len() as u64).await, body);

    // Short, long and abandoned bodies leave nothing behind.
    let short = store.allocate(ChatType::Im).await.unwrap();
    let err = upload(&store, &short, &data(10), 20).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::ShortBody {
                expected: 20,
                got: 10
            }
        ),
        "{err}"
    );
    let long = store.allocate(ChatType::Im).await.unwrap();
    let err = upload(&store, &long, &data(30), 20).await.unwrap_err();
    assert!(
        matches!(err, StoreError::LongBody { expected: 20 }),
        "{err}"
    );
    let dropped = store.allocate(ChatType::Im).await.unwrap();
    let mut up = store.begin_upload(dropped.clone(), meta(100));
    up.write(Bytes::from(data(50))).await.unwrap();
    drop(up);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        names(view.as_ref(), &loc).len(),
        2,
        "{:?}",
        names(view.as_ref(), &loc)
    );
    for l in [&short, &long, &dropped] {
        assert!(store.stat(l).await.unwrap_err().is_not_found());
    }

    // Concurrent uploads into a directory nobody made yet.
    let mut tasks = Vec::new();
    for chat in [ChatType::Groupchat, ChatType::Persistent] {
        for _ in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let loc = store.allocate(chat).await.unwrap();
                upload(&store, &loc, &data(1000), 1000).await.map(|_| loc)
            }));
        }
    }
    for t in tasks {
        let loc = t.await.unwrap().unwrap();
        assert_eq!(store.stat(&loc).await.unwrap().size, 1000);
    }

    // Removal.
    store.remove(&loc).await.unwrap();
    assert!(store.stat(&loc).await.unwrap_err().is_not_found());
    let unknown = Location::new_random(ChatType::Im, "20200101", "00");
    assert!(store.stat(&unknown).await.unwrap_err().is_not_found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(LocalBackend::new(dir.path()).unwrap());
    suite(store, Box::new(LocalBackend::new(dir.path()).unwrap())).await;
}

/// SFTP settings for a node directory on `sshd` with an authorised key.
pub fn sftp_settings(sshd: &Sshd, keys: &std::path::Path) -> SftpSettings {
    let key = sshd.node_key(keys, "node_1");
    SftpSettings {
        host: "127.0.0.1".into(),
        port: sshd.port,
        user: USER.into(),
        directory: sshd.node_root().join("node_1").display().to_string(),
        host_key: mft_storage::hostkey::PinnedHostKey::parse(
            &sshd.keyscan("ed25519"),
            "127.0.0.1",
            sshd.port,
        )
        .unwrap(),
        private_key: key,
        pool_size: 4,
        connect_timeout: Duration::from_secs(3),
        io_timeout: Duration::from_secs(10),
        ciphers: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_store_conforms() {
    let sshd = Sshd::start();
    let keys = tempfile::tempdir().unwrap();
    let settings = sftp_settings(&sshd, keys.path());
    let store = Store::new(SftpBackend::new(settings.clone()));
    suite(store, Box::new(SftpBackend::new(settings))).await;
    // The files really are on the server, in the layout, owned by the file server user.
    let on_disk = xmpp_tests::mftd::stored_files(&sshd.node_root().join("node_1"));
    assert!(
        on_disk.iter().any(|f| f.starts_with("files/groupchat/")),
        "{on_disk:?}"
    );
}
