//! One conformance suite, run against every store backend: the local disk,
//! a real OpenSSH sshd as SFTP file server, and a real three-node Garage
//! cluster as S3 service.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use mft_storage::backend::Backend;
use mft_storage::local::LocalBackend;
use mft_storage::s3::{S3Backend, S3Settings};
use mft_storage::sftp::{SftpBackend, SftpSettings};
use mft_storage::{reconcile, ChatType, FileMeta, Location, Store, StoreError};
use std::io::Write;
use xmpp_tests::garage::Garage;
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
    let mut up = store.begin_upload(loc.clone(), meta(size)).await?;
    for piece in body.chunks(100_000) {
        up.write(Bytes::copy_from_slice(piece)).await?;
    }
    up.finish().await
}

async fn read_all(store: &Store, loc: &Location, start: u64, len: u64) -> Vec<u8> {
    let mut download = store.read(loc, start, len).await.unwrap();
    let mut out = Vec::new();
    while let Some(piece) = std::future::poll_fn(|cx| download.poll_next(cx)).await {
        out.extend_from_slice(&piece.unwrap());
    }
    out
}

/// Names in the location's directory, temporary files included.
fn names(backend: &dyn Backend, loc: &Location) -> Vec<String> {
    let mut s = backend.session().unwrap();
    // A blocking call (S3 waits on its own runtime).
    let mut n = tokio::task::block_in_place(|| s.list_dir(&loc.dir())).unwrap_or_default();
    n.sort();
    n
}

/// How a backend keeps an upload a crash interrupted.
#[derive(PartialEq)]
enum Leftover {
    /// A hidden temporary file beside the files (local disk, SFTP).
    TemporaryFile,
    /// Nothing visible: an unfinished multipart upload (S3).
    Invisible,
}

/// Where a backend keeps a file's description.
#[derive(PartialEq, Clone, Copy)]
enum Description {
    /// On the file itself, an extended attribute (local disk).
    Attached,
    /// A `<resource>.meta` beside it (SFTP, S3).
    Beside,
}

/// Where a backend keeps the description of a large upload and of a small
/// one (S3 sends a small one as one `PUT` with the description as its
/// metadata; a multipart upload's metadata is fixed before the SHA-256 is
/// known).
struct Kept {
    large: Description,
    small: Description,
}

async fn suite(store: Store, view: Box<dyn Backend>, leftover: Leftover, kept: Kept) {
    // A complete upload: readable whole and in ranges, described, hashed;
    // larger than one S3 part, so it goes as a multipart upload there.
    let loc = store.allocate(ChatType::Im).await.unwrap();
    let body = data(9_500_000);
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
    let attached = {
        let mut s = view.session().unwrap();
        tokio::task::block_in_place(|| s.description(&loc.path()))
    };
    match kept.large {
        Description::Attached => {
            assert_eq!(names(view.as_ref(), &loc), vec![loc.resource().to_owned()]);
            let on_file = FileMeta::from_bytes(&attached.expect("no description on the file"));
            assert_eq!(on_file.as_ref(), Some(&stored.meta), "{on_file:?}");
        }
        Description::Beside => {
            assert_eq!(
                names(view.as_ref(), &loc),
                vec![
                    loc.resource().to_owned(),
                    format!("{}.meta", loc.resource())
                ]
            );
            assert!(attached.is_none());
        }
    }
    // A small upload.
    let small = store.allocate(ChatType::Im).await.unwrap();
    let stored_small = upload(&store, &small, b"tiny", 4).await.unwrap();
    let listed = names(view.as_ref(), &small);
    let small_meta = format!("{}.meta", small.resource());
    let attached = {
        let mut s = view.session().unwrap();
        tokio::task::block_in_place(|| s.description(&small.path()))
    };
    match kept.small {
        Description::Attached => {
            assert!(!listed.contains(&small_meta), "{listed:?}");
            let on_file = FileMeta::from_bytes(&attached.expect("no description on the file"));
            assert_eq!(on_file.as_ref(), Some(&stored_small.meta));
        }
        Description::Beside => {
            assert!(listed.contains(&small_meta), "{listed:?}");
            assert!(attached.is_none());
        }
    }
    assert_eq!(
        store.stat(&small).await.unwrap().meta.as_ref(),
        Some(&stored_small.meta)
    );
    // A description too large for an attribute (ext4 takes about 4 KiB)
    // goes beside the file instead; either way it is read back.
    let wordy_loc = store.allocate(ChatType::Im).await.unwrap();
    let mut wordy = meta(3);
    wordy.to = format!("{}@rooms.example.test", "r".repeat(8000));
    let mut up = store
        .begin_upload(wordy_loc.clone(), wordy.clone())
        .await
        .unwrap();
    up.write(Bytes::from_static(b"abc")).await.unwrap();
    up.finish().await.unwrap();
    let back = store.stat(&wordy_loc).await.unwrap().meta.unwrap();
    assert_eq!(back.to, wordy.to);
    let listed = names(view.as_ref(), &wordy_loc);
    assert!(
        listed.contains(&format!("{}.meta", wordy_loc.resource())),
        "{listed:?}"
    );
    let settled = names(view.as_ref(), &loc);

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
    let mut up = store
        .begin_upload(dropped.clone(), meta(100))
        .await
        .unwrap();
    up.write(Bytes::from(data(50))).await.unwrap();
    drop(up);
    // Whatever they began is removed, in the background for the dropped one.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while names(view.as_ref(), &loc) != settled && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(names(view.as_ref(), &loc), settled);
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

    // Uploads and downloads waiting on their clients hold no blocking
    // thread: with more of them open than the runtime has blocking threads
    // (the tests run with MAX_BLOCKING), a new upload and a read still go through.
    let mut waiting = Vec::new();
    for _ in 0..(MAX_BLOCKING * 3) {
        let l = store.allocate(ChatType::Im).await.unwrap();
        let mut up = store.begin_upload(l, meta(1000)).await.unwrap();
        up.write(Bytes::from(data(10))).await.unwrap();
        waiting.push(up);
    }
    let mut readers = Vec::new();
    for _ in 0..(MAX_BLOCKING * 3) {
        let mut d = store.read(&loc, 0, body.len() as u64).await.unwrap();
        // Take one piece, then stop reading, as a client that went quiet.
        let first = std::future::poll_fn(|cx| d.poll_next(cx)).await;
        assert!(first.unwrap().is_ok());
        readers.push(d);
    }
    let fresh = store.allocate(ChatType::Im).await.unwrap();
    let unblocked = tokio::time::timeout(Duration::from_secs(30), async {
        upload(&store, &fresh, &data(2000), 2000).await.unwrap();
        read_all(&store, &fresh, 0, 2000).await
    })
    .await
    .expect("a new transfer waited for stalled ones: blocking threads are pinned");
    assert_eq!(unblocked, data(2000));
    drop(waiting);
    drop(readers);
    // The dropped uploads remove what they began in the background.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let inv = reconcile::inventory(&store, None).await.unwrap();
        let unfinished = tokio::task::block_in_place(|| view.unfinished_uploads()).unwrap();
        if inv.temporaries.is_empty() && unfinished == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "abandoned uploads left {inv:?} and {unfinished} unfinished uploads"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Start-up recovery removes what a crash leaves: an upload cut off
    // after more than one S3 part (its writer never dropped, as in a killed
    // process) and a description without its file; published files stay.
    let crashed = Location::new_random(ChatType::Im, "20200101", "01");
    {
        let mut s = view.session().unwrap();
        let crashed = crashed.clone();
        tokio::task::spawn_blocking(move || {
            s.create_dir_all(&crashed.dir()).unwrap();
            let part = format!("{}/.{}.data.0123.part", crashed.dir(), crashed.resource());
            let mut w = s.create_upload(&part, &crashed.path()).unwrap();
            w.write_all(&data(mft_storage::s3::PART_SIZE + 1)).unwrap();
            std::mem::forget(w);
            let orphan = Location::new_random(ChatType::Im, "20200101", "00");
            s.create_dir_all(&orphan.dir()).unwrap();
            let mut m = s.create_new(&orphan.meta_path()).unwrap();
            m.write_all(b"{}").unwrap();
            m.sync().unwrap();
        })
        .await
        .unwrap();
    }
    let inv = reconcile::inventory(&store, None).await.unwrap();
    let visible = usize::from(leftover == Leftover::TemporaryFile);
    assert_eq!(inv.temporaries.len(), visible, "{inv:?}");
    assert_eq!(inv.orphan_metas.len(), 1, "{inv:?}");
    if leftover == Leftover::TemporaryFile {
        // Its age by the file server's clock (what `mftd verify` tells an
        // upload in progress by): just written.
        let ages = reconcile::temporary_ages(&store, inv.temporaries.clone())
            .await
            .unwrap();
        let written = ages[0].1.expect("the store tells when a file changed");
        assert!(
            written.elapsed().unwrap_or_default() < Duration::from_secs(60),
            "{ages:?}"
        );
    }
    // One gone since the walk is left out.
    let gone = vec![format!("{}/.gone.data.0.part", loc.dir())];
    assert!(reconcile::temporary_ages(&store, gone)
        .await
        .unwrap()
        .is_empty());
    let done = reconcile::recover(&store, None, None).await.unwrap();
    assert_eq!(
        (done.temporaries_removed, done.orphan_metas_removed),
        (1, 1)
    );
    let inv = reconcile::inventory(&store, None).await.unwrap();
    assert!(
        inv.temporaries.is_empty() && inv.orphan_metas.is_empty(),
        "{inv:?}"
    );
    assert!(inv.files.iter().any(|l| l == &fresh), "{inv:?}");
    assert!(!inv.files.iter().any(|l| l == &crashed), "{inv:?}");
    assert!(store.stat(&crashed).await.unwrap_err().is_not_found());
    // Nothing is left to recover a second time.
    let again = reconcile::recover(&store, None, None).await.unwrap();
    assert_eq!(
        (again.temporaries_removed, again.orphan_metas_removed),
        (0, 0)
    );

    // Removal.
    store.remove(&loc).await.unwrap();
    assert!(store.stat(&loc).await.unwrap_err().is_not_found());
    let unknown = Location::new_random(ChatType::Im, "20200101", "00");
    assert!(store.stat(&unknown).await.unwrap_err().is_not_found());
}

/// Blocking threads of the test runtimes: fewer than the stalled transfers
/// the suite opens.
const MAX_BLOCKING: usize = 4;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(MAX_BLOCKING)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = Store::new(LocalBackend::new(dir.path()).unwrap());
        suite(
            store,
            Box::new(LocalBackend::new(dir.path()).unwrap()),
            Leftover::TemporaryFile,
            Kept {
                large: Description::Attached,
                small: Description::Attached,
            },
        )
        .await;
    });
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

#[test]
fn sftp_store_conforms() {
    let sshd = Sshd::start();
    let keys = tempfile::tempdir().unwrap();
    let settings = sftp_settings(&sshd, keys.path());
    runtime().block_on(async {
        let store = Store::new(SftpBackend::new(settings.clone()));
        suite(
            store,
            Box::new(SftpBackend::new(settings)),
            Leftover::TemporaryFile,
            Kept {
                large: Description::Beside,
                small: Description::Beside,
            },
        )
        .await;
    });
    // The files really are on the server, in the layout, owned by the file server user.
    let on_disk = xmpp_tests::mftd::stored_files(&sshd.node_root().join("node_1"));
    assert!(
        on_disk.iter().any(|f| f.starts_with("files/groupchat/")),
        "{on_disk:?}"
    );
}

/// S3 settings for node_1's prefix in the test cluster's bucket, on the
/// endpoint of Garage node `i`.
pub fn s3_settings(garage: &Garage, i: usize) -> S3Settings {
    S3Settings {
        client: mft_storage::s3::ClientSettings {
            endpoint: mft_storage::s3::Endpoint::parse(&garage.endpoint(i)).unwrap(),
            bucket: xmpp_tests::garage::BUCKET.into(),
            region: xmpp_tests::garage::REGION.into(),
            credentials: mft_storage::s3::sigv4::Credentials {
                access_key_id: garage.key_id.clone(),
                secret_access_key: garage.secret.clone(),
            },
            tls: None,
            connect_timeout: Duration::from_secs(3),
            io_timeout: Duration::from_secs(10),
        },
        prefix: "mftFileStore/node_1".into(),
    }
}

#[test]
fn s3_store_conforms() {
    let garage = Garage::start();
    let settings = s3_settings(&garage, 0);
    runtime().block_on(async {
        let store = Store::new(S3Backend::new(settings.clone()));
        suite(
            store,
            Box::new(S3Backend::new(settings)),
            Leftover::Invisible,
            Kept {
                large: Description::Beside,
                small: Description::Attached,
            },
        )
        .await;
    });
    // The objects really are in the bucket, in the layout, and no
    // multipart upload is left unfinished.
    let listing = garage.list_keys("mftFileStore/node_1/files/groupchat/");
    assert!(!listing.is_empty(), "no groupchat object in the bucket");
    assert_eq!(garage.unfinished_uploads(), 0);
}

/// An upload keeps up to 2 MiB of SFTP writes in flight between pieces. One
/// abandoned in the middle must still leave its connection clean: the next
/// upload reuses it (no new SSH login) and stores the right bytes.
#[test]
fn an_sftp_upload_abandoned_with_writes_in_flight_leaves_its_connection_reusable() {
    let sshd = Sshd::start();
    let keys = tempfile::tempdir().unwrap();
    let settings = sftp_settings(&sshd, keys.path());
    let logins = || sshd.log().matches("Accepted publickey").count();
    runtime().block_on(async {
        let store = Store::new(SftpBackend::new(settings));
        let first = store.allocate(ChatType::Im).await.unwrap();
        let body = data(9_000_000);
        upload(&store, &first, &body, body.len() as u64)
            .await
            .unwrap();
        let before = logins();

        let dropped = store.allocate(ChatType::Im).await.unwrap();
        let mut up = store
            .begin_upload(dropped.clone(), meta(body.len() as u64))
            .await
            .unwrap();
        for piece in body[..6_000_000].chunks(100_000) {
            up.write(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        drop(up);
        // Its temporary file goes on its own session, which then returns
        // to the pool: wait for the file to go (looking on the file
        // server's disk, which logs nobody in).
        let on_disk = sshd.node_root().join("node_1").join(dropped.dir());
        assert!(on_disk.is_dir(), "{}", on_disk.display());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::fs::read_dir(&on_disk)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".part"))
            })
            .unwrap_or(false)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the abandoned upload's file stays"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;

        let next = store.allocate(ChatType::Im).await.unwrap();
        upload(&store, &next, &body, body.len() as u64)
            .await
            .unwrap();
        assert_eq!(read_all(&store, &next, 0, body.len() as u64).await, body);
        assert!(store.stat(&dropped).await.unwrap_err().is_not_found());
        assert_eq!(
            logins(),
            before,
            "the abandoned upload's connection was not reused: {}",
            sshd.log()
        );
    });
}

/// Established TCP connections to `port` on this machine (the harness's
/// sshd port is this test's own).
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let remote_port = f[2].rsplit(':').next().unwrap_or("");
            u16::from_str_radix(remote_port, 16) == Ok(port) && f[3] == "01"
        })
        .count()
}

/// Transfers whose clients went quiet give their SSH sessions back (16
/// stalled transfers, a pool of 4), then go on where they stopped once
/// their clients move again: every byte in place, the hash of the whole.
/// An upload whose temporary file vanished while it was put away fails
/// and publishes nothing.
#[test]
fn stalled_sftp_transfers_give_their_sessions_back_and_resume() {
    let sshd = Sshd::start();
    let keys = tempfile::tempdir().unwrap();
    let settings = sftp_settings(&sshd, keys.path());
    runtime().block_on(async {
        let store = Store::new(SftpBackend::new(settings.clone()));
        let source = store.allocate(ChatType::Im).await.unwrap();
        let body = data(5_000_000);
        upload(&store, &source, &body, body.len() as u64)
            .await
            .unwrap();

        let half = 2_500_000;
        let mut uploads = Vec::new();
        for _ in 0..8 {
            let loc = store.allocate(ChatType::Im).await.unwrap();
            let mut up = store
                .begin_upload(loc.clone(), meta(body.len() as u64))
                .await
                .unwrap();
            for piece in body[..half].chunks(100_000) {
                up.write(Bytes::copy_from_slice(piece)).await.unwrap();
            }
            uploads.push((loc, up));
        }
        let mut downloads = Vec::new();
        for _ in 0..8 {
            let mut d = store.read(&source, 0, body.len() as u64).await.unwrap();
            let first = std::future::poll_fn(|cx| d.poll_next(cx)).await;
            downloads.push((first.unwrap().unwrap().to_vec(), d));
        }
        assert!(
            connections_to(sshd.port) >= 16,
            "each open transfer holds a session: {}",
            connections_to(sshd.port)
        );
        tokio::time::sleep(mft_storage::PARK_AFTER + Duration::from_secs(2)).await;
        let open = connections_to(sshd.port);
        assert!(
            open <= settings.pool_size,
            "stalled transfers still hold {open} sessions (pool: {})",
            settings.pool_size
        );

        // One parked upload loses its temporary file meanwhile.
        let (lost_loc, mut lost) = uploads.pop().unwrap();
        let view = SftpBackend::new(settings.clone());
        let temp = names(&view, &lost_loc)
            .into_iter()
            .find(|n| n.starts_with(&format!(".{}", lost_loc.resource())) && n.ends_with(".part"))
            .expect("the stalled upload's temporary file");
        let gone = format!("{}/{temp}", lost_loc.dir());
        tokio::task::block_in_place(|| view.session().unwrap().remove(&gone)).unwrap();
        let mut failed = false;
        for piece in body[half..].chunks(100_000) {
            if lost.write(Bytes::copy_from_slice(piece)).await.is_err() {
                failed = true;
                break;
            }
        }
        if !failed {
            failed = lost.finish().await.is_err();
        } else {
            drop(lost);
        }
        assert!(failed, "an upload whose temporary file vanished completed");
        assert!(
            store.stat(&lost_loc).await.unwrap_err().is_not_found(),
            "nothing is published for it"
        );

        for (loc, mut up) in uploads {
            for piece in body[half..].chunks(100_000) {
                up.write(Bytes::copy_from_slice(piece)).await.unwrap();
            }
            let stored = up.finish().await.unwrap();
            assert_eq!(stored.meta.sha256, sha256_hex(&body));
            assert_eq!(read_all(&store, &loc, 0, body.len() as u64).await, body);
        }
        for (mut got, mut d) in downloads {
            while let Some(piece) = std::future::poll_fn(|cx| d.poll_next(cx)).await {
                got.extend_from_slice(&piece.unwrap());
            }
            assert!(got == body, "a resumed download differs");
        }
    });
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}
