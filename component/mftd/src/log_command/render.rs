//! How `mftd log` writes rows as they arrive: aligned columns for people,
//! one JSON object per line, or CSV that a spreadsheet opens safely. Nothing
//! is held but a table's first window of rows (to size its columns).

use std::io::{self, Write};

use mft_storage::log_query::{LogRow, RemovalRow, ShareRow};
use serde::Serialize;

/// Output formats of `mftd log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns (the widths of the first 1000 rows).
    Table,
    /// One JSON object per line.
    Json,
    /// Comma-separated with a header line; cells a spreadsheet would run
    /// as formulas are prefixed with `'`.
    Csv,
}

/// A row `mftd log` can print.
pub trait Record: Serialize {
    /// Column names, in the order of [`Record::cells`].
    const COLUMNS: &'static [&'static str];
    /// The columns a table shows.
    const TABLE: &'static [usize];
    /// Every column as text.
    fn cells(&self) -> Vec<String>;
}

impl Record for LogRow {
    const COLUMNS: &'static [&'static str] = &[
        "aft_index",
        "date_time",
        "method",
        "jid",
        "to_jid",
        "chat_type",
        "real_filename",
        "filename",
        "file_size",
        "http_status",
        "bytes_sent",
        "client_address",
        "sha256",
    ];
    const TABLE: &'static [usize] = &[0, 1, 2, 3, 4, 5, 6, 8, 9, 10];
    fn cells(&self) -> Vec<String> {
        vec![
            self.aft_index.to_string(),
            self.date_time.clone(),
            self.method.clone(),
            self.jid.clone(),
            self.to_jid.clone(),
            self.chat_type.clone(),
            self.real_filename.clone(),
            self.filename.clone(),
            self.file_size.to_string(),
            self.http_status.to_string(),
            self.bytes_sent.to_string(),
            self.client_address.clone(),
            self.sha256.clone(),
        ]
    }
}

impl Record for ShareRow {
    const COLUMNS: &'static [&'static str] = &[
        "share_id",
        "date_time",
        "sender",
        "recipient",
        "chat_type",
        "filename",
        "real_filename",
    ];
    const TABLE: &'static [usize] = &[0, 1, 2, 3, 4, 6];
    fn cells(&self) -> Vec<String> {
        vec![
            self.share_id.to_string(),
            self.date_time.clone(),
            self.sender.clone(),
            self.recipient.clone(),
            self.chat_type.clone(),
            self.filename.clone(),
            self.real_filename.clone(),
        ]
    }
}

impl Record for RemovalRow {
    const COLUMNS: &'static [&'static str] = &[
        "removal_id",
        "removed_at",
        "reason",
        "removed_by",
        "note",
        "uploader",
        "chat_type",
        "real_filename",
        "filename",
        "size",
        "sha256",
    ];
    const TABLE: &'static [usize] = &[0, 1, 2, 3, 5, 6, 7, 9];
    fn cells(&self) -> Vec<String> {
        vec![
            self.removal_id.to_string(),
            self.removed_at.clone(),
            self.reason.clone(),
            self.removed_by.clone(),
            self.note.clone(),
            self.uploader.clone(),
            self.chat_type.clone(),
            self.real_filename.clone(),
            self.filename.clone(),
            self.size.to_string(),
            self.sha256.clone(),
        ]
    }
}

/// Rows a table holds to size its columns; later rows use those widths.
const TABLE_WINDOW: usize = 1000;

/// Writes rows of one kind in one format.
pub struct Output<W: Write, R: Record> {
    out: W,
    format: Format,
    rows: u64,
    /// Table rows not yet written (only until the widths are known).
    pending: Vec<Vec<String>>,
    widths: Option<Vec<usize>>,
    kind: std::marker::PhantomData<R>,
}

impl<W: Write, R: Record> Output<W, R> {
    /// Starts the output (a CSV header at once).
    pub fn new(mut out: W, format: Format) -> io::Result<Self> {
        if format == Format::Csv {
            writeln!(out, "{}", R::COLUMNS.join(","))?;
        }
        Ok(Output {
            out,
            format,
            rows: 0,
            pending: Vec::new(),
            widths: None,
            kind: std::marker::PhantomData,
        })
    }

    /// Writes one row (a table's first rows once their window is full).
    pub fn row(&mut self, row: &R) -> io::Result<()> {
        self.rows += 1;
        match self.format {
            Format::Json => {
                serde_json::to_writer(&mut self.out, row)?;
                self.out.write_all(b"\n")
            }
            Format::Csv => {
                let cells: Vec<String> = row.cells().iter().map(|c| csv_cell(c)).collect();
                writeln!(self.out, "{}", cells.join(","))
            }
            Format::Table => {
                let all = row.cells();
                let cells: Vec<String> = R::TABLE.iter().map(|&i| terminal_safe(&all[i])).collect();
                match &self.widths {
                    Some(_) => self.table_line(&cells),
                    None => {
                        self.pending.push(cells);
                        if self.pending.len() >= TABLE_WINDOW {
                            self.flush_window()?;
                        }
                        Ok(())
                    }
                }
            }
        }
    }

    /// Ends the output; a table closes with its row count and, when `more`
    /// rows matched than were shown, how many and how to see them.
    pub fn finish(mut self, more: i64) -> io::Result<W> {
        if self.format == Format::Table {
            if self.widths.is_none() {
                self.flush_window()?;
            }
            if more > 0 {
                writeln!(
                    self.out,
                    "({} rows, newest first; {more} more match: raise --limit or use --all)",
                    self.rows
                )?;
            } else {
                writeln!(self.out, "({} rows)", self.rows)?;
            }
        }
        self.out.flush()?;
        Ok(self.out)
    }

    fn flush_window(&mut self) -> io::Result<()> {
        let header: Vec<String> = R::TABLE.iter().map(|&i| R::COLUMNS[i].to_owned()).collect();
        let widths = (0..header.len())
            .map(|i| {
                self.pending
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([header[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        self.widths = Some(widths);
        self.table_line(&header)?;
        for cells in std::mem::take(&mut self.pending) {
            self.table_line(&cells)?;
        }
        Ok(())
    }

    fn table_line(&mut self, cells: &[String]) -> io::Result<()> {
        let widths = self.widths.as_deref().unwrap_or_default();
        let line = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        writeln!(self.out, "{}", line.trim_end())
    }
}

/// A CSV cell: quoted when it holds a separator, a quote or a line break;
/// a cell a spreadsheet would read as a formula (it starts with `=`, `+`,
/// `-`, `@`, a tab or a carriage return) gets a leading `'` and quotes, as
/// OWASP's "CSV injection" advice says. The `'` shows in the sheet: the
/// value is then text, whatever a user named the file.
pub fn csv_cell(c: &str) -> String {
    let formula = c.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if formula {
        format!("\"'{}\"", c.replace('"', "\"\""))
    } else if c.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", c.replace('"', "\"\""))
    } else {
        c.to_owned()
    }
}

/// A table cell for a terminal: control characters (escape sequences a
/// file name could carry) shown escaped instead of acted on.
fn terminal_safe(c: &str) -> String {
    if !c.chars().any(char::is_control) {
        return c.to_owned();
    }
    c.chars()
        .map(|ch| {
            if ch.is_control() {
                ch.escape_default().to_string()
            } else {
                ch.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str) -> LogRow {
        LogRow {
            aft_index: 7,
            date_time: "2026-11-26T00:00:00Z".into(),
            method: "POST".into(),
            jid: "alice@example.test".into(),
            to_jid: String::new(),
            chat_type: "im".into(),
            real_filename: name.into(),
            filename: "res".into(),
            file_size: 12,
            http_status: 201,
            bytes_sent: 12,
            client_address: "127.0.0.1".into(),
            sha256: "ab".into(),
        }
    }

    fn render(rows: &[LogRow], format: Format, more: i64) -> String {
        let mut out = Output::new(Vec::new(), format).unwrap();
        for r in rows {
            out.row(r).unwrap();
        }
        String::from_utf8(out.finish(more).unwrap()).unwrap()
    }

    #[test]
    fn csv_quotes_and_json_types() {
        let rec = [row("a, \"b\".txt")];
        let csv = render(&rec, Format::Csv, 0);
        assert!(csv.contains(",\"a, \"\"b\"\".txt\","), "{csv}");
        let json = render(&rec, Format::Json, 0);
        assert!(
            json.contains("\"aft_index\":7") && json.contains("\"method\":\"POST\""),
            "{json}"
        );
        let table = render(&rec, Format::Table, 0);
        assert!(table.ends_with("(1 rows)\n"), "{table}");
        let table = render(&rec, Format::Table, 5);
        assert!(
            table.ends_with("5 more match: raise --limit or use --all)\n"),
            "{table}"
        );
    }

    #[test]
    fn csv_cells_a_spreadsheet_would_run_are_text() {
        for (given, written) in [
            (
                "=HYPERLINK(\"http://x\",\"y\")",
                "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"",
            ),
            ("+1+1", "\"'+1+1\""),
            ("-2+3", "\"'-2+3\""),
            ("@SUM(A1)", "\"'@SUM(A1)\""),
            ("\t=1", "\"'\t=1\""),
            ("\r=1", "\"'\r=1\""),
            ("report=final.pdf", "report=final.pdf"),
            ("", ""),
        ] {
            assert_eq!(csv_cell(given), written, "{given:?}");
        }
    }

    #[test]
    fn a_table_shows_control_characters_escaped_and_streams_past_its_window() {
        let table = render(&[row("\u{1b}[2Jx.txt")], Format::Table, 0);
        assert!(table.contains("\\u{1b}[2Jx.txt"), "{table}");
        assert!(!table.contains('\u{1b}'));
        let many: Vec<LogRow> = (0..TABLE_WINDOW + 3).map(|_| row("a.txt")).collect();
        let table = render(&many, Format::Table, 0);
        assert_eq!(table.lines().count(), 1 + TABLE_WINDOW + 3 + 1);
        assert_eq!(
            table.lines().filter(|l| l.starts_with("aft_index")).count(),
            1
        );
    }
}
