//! The report: a measurement series, a table of series with ratios to a
//! baseline, rendered as Markdown.

use std::fmt::Write as _;

/// Figures of one measurement series.
pub struct Series(pub Vec<f64>);

impl Series {
    pub fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    }
    pub fn median(&self) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        v[v.len() / 2]
    }
    pub fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }
    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
}

pub struct Table {
    pub title: String,
    pub unit: String,
    pub rows: Vec<(String, Series, Option<String>)>,
    pub baseline: Option<usize>,
    pub note: String,
}

impl Table {
    pub fn new(title: &str, unit: &str) -> Table {
        Table {
            title: title.into(),
            unit: unit.into(),
            rows: Vec::new(),
            baseline: None,
            note: String::new(),
        }
    }
    pub fn add(&mut self, name: &str, s: Series) {
        self.rows.push((name.into(), s, None));
    }
    pub fn add_failed(&mut self, name: &str, why: String) {
        self.rows.push((name.into(), Series(vec![]), Some(why)));
    }
    pub fn render(&self) -> String {
        let mut out = format!(
            "### {}\n\n| | median {u} | min | max | ratio to baseline |\n|---|---|---|---|---|\n",
            self.title,
            u = self.unit
        );
        let base = self.baseline.map(|i| self.rows[i].1.median());
        for (i, (name, s, failed)) in self.rows.iter().enumerate() {
            if let Some(why) = failed {
                let _ = writeln!(out, "| {name} | failed: {why} | | | |");
                continue;
            }
            let ratio = match (base, self.baseline == Some(i)) {
                (_, true) => "baseline".to_owned(),
                (Some(b), false) if b > 0.0 => format!("{:.2}×", s.median() / b),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "| {name} | {:.1} | {:.1} | {:.1} | {ratio} |",
                s.median(),
                s.min(),
                s.max()
            );
        }
        if !self.note.is_empty() {
            let _ = writeln!(out, "\n{}", self.note);
        }
        out.push('\n');
        out
    }
}
