//! Scenarios 1 and 3: the local store against Prosody, ejabberd and the disk.

use std::path::Path;
use std::time::Instant;

use crate::report::{Series, Table};
use crate::tools::*;
use crate::Args;

/// Scenarios 1 and 3: the local store against Prosody, ejabberd and the disk.
pub fn run(a: &Args, work: &Path, report: &mut String) {
    report.push_str("## Upload and download, local store\n\n");
    let sizes = sizes(a);
    for &size in &sizes {
        let file = make_file(work, size);
        let mut dd_w = Vec::new();
        let mut dd_r = Vec::new();
        for _ in 0..a.runs {
            let target = work.join("dd.out");
            let started = Instant::now();
            sh(&format!(
                "dd if={} of={} bs=1M conv=fdatasync 2>/dev/null",
                file.display(),
                target.display()
            ));
            dd_w.push(mb_s(size, started.elapsed().as_secs_f64()));
            sh("sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null");
            let started = Instant::now();
            sh(&format!(
                "dd if={} of=/dev/null bs=1M 2>/dev/null",
                target.display()
            ));
            dd_r.push(mb_s(size, started.elapsed().as_secs_f64()));
        }
        let admin_port = xmpp_tests::process::free_port();
        let mftd = mftd_local(&admin_section(admin_port));
        let scraper = Scraper::start(admin_port);
        // An A/B row: another build of mftd on the same files in the same
        // run, its runs interleaved with this build's (alternating which goes
        // first) so neither inherits the other's dirty page cache every time.
        let other =
            std::env::var_os("MFTD_BASELINE_BIN").map(|bin| mftd_local_binary("", bin.into()));
        let (mut m_up, mut m_down, mut b_up, mut b_down) = (vec![], vec![], vec![], vec![]);
        let ours = || {
            let (u, d) = mftd_upload_download(&mftd, &file, size, 1);
            m_up.extend(u.0);
            m_down.extend(d.0);
        };
        let theirs = || {
            if let Some(other) = &other {
                let (u, d) = mftd_upload_download(other, &file, size, 1);
                b_up.extend(u.0);
                b_down.extend(d.0);
            }
        };
        interleaved(a.runs, ours, theirs);
        let scrapes = scraper.finish();
        drop(mftd);
        drop(other);
        let (m_up, m_down) = (Series(m_up), Series(m_down));
        let baseline = (!b_up.is_empty()).then_some((Series(b_up), Series(b_down)));
        let mut up = Table::new(&format!("Upload {} MiB (MB/s)", size / MIB), "MB/s");
        let mut down = Table::new(&format!("Download {} MiB (MB/s)", size / MIB), "MB/s");
        // Stock Prosody reads 4 KiB per wake-up (~3.5 MB/s here): a 1 GiB run
        // would take minutes per repetition, so it is measured on small files only.
        let stock = (size <= 100 * MIB).then(|| prosody_share(4096, &file, size, a.runs));
        let (t_up, t_down) = prosody_share(1 << 20, &file, size, a.runs);
        let (e_up, e_down) = ejabberd_upload(&file, size, a.runs);
        match &stock {
            Some((p_up, _)) => up.add(
                "Prosody 0.12 mod_http_file_share, stock (4 KiB reads)",
                Series(p_up.0.clone()),
            ),
            None => up.add_failed(
                "Prosody, stock (4 KiB reads)",
                "not run at this size (minutes per transfer)".into(),
            ),
        };
        up.add("Prosody mod_http_file_share, 1 MiB reads", t_up);
        let ejabberd_up = up.add("ejabberd 23.01 mod_http_upload", e_up);
        let mftd_up = up.add("**mftd**, local store (fsync before 201)", m_up);
        if let Some((b_up, _)) = &baseline {
            up.add("mftd, `$MFTD_BASELINE_BIN` build", Series(b_up.0.clone()));
        }
        let dd = up.add("disk: `dd bs=1M conv=fdatasync`", Series(dd_w));
        up.baseline = Some(ejabberd_up);
        up.target(mftd_up, ejabberd_up, 1.2);
        up.target(mftd_up, dd, 0.9);
        match stock {
            Some((_, p_down)) => down.add("Prosody, stock", p_down),
            None => down.add_failed("Prosody, stock", "not run at this size".into()),
        };
        down.add("Prosody, 1 MiB reads", t_down);
        let ejabberd_down = down.add("ejabberd 23.01 mod_http_upload", e_down);
        let mftd_down = down.add("**mftd**, local store", m_down);
        if let Some((_, b_down)) = baseline {
            down.add("mftd, `$MFTD_BASELINE_BIN` build", b_down);
        }
        down.add(
            "disk: `dd` read (page cache dropped when allowed)",
            Series(dd_r),
        );
        down.baseline = Some(ejabberd_down);
        down.target(mftd_down, ejabberd_down, 1.2);
        up.note = format!(
            "Baseline: ejabberd. ejabberd and Prosody write without fsync; mftd fsyncs file and directory before answering 201. \
             mftd ran with its admin listener on and /metrics scraped every second ({scrapes} scrapes during its runs)."
        );
        report.push_str(&up.render());
        report.push_str(&down.render());
    }
}
