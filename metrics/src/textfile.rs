//! Metrics an operator command (`mftd verify`, `verify --log`, `--rescan`)
//! writes once for the node exporter's textfile collector: gauges with
//! their help and labels, encoded by prometheus-client like `/metrics`, so
//! names, label values and escaping follow the exposition format by
//! construction rather than by hand. Every value is a count or a time in
//! whole seconds.

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;

type Labels = Vec<(String, String)>;
type Gauges = Family<Labels, Gauge>;

/// A set of gauges to write as one textfile.
#[derive(Default)]
pub struct Textfile {
    registry: Registry,
    gauges: HashMap<&'static str, Gauges>,
}

impl Textfile {
    /// An empty textfile.
    pub fn new() -> Textfile {
        Textfile::default()
    }

    /// Sets gauge `name` (its full name, `mftd_…`) with `labels` to `value`;
    /// `help` is used the first time a name is set.
    pub fn gauge(&mut self, name: &'static str, help: &str, labels: &[(&str, &str)], value: i64) {
        let family = self.gauges.entry(name).or_insert_with(|| {
            let family = Gauges::default();
            self.registry.register(name, help, family.clone());
            family
        });
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        family.get_or_create(&labels).set(value);
    }

    /// The Prometheus text exposition of every gauge set.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_render_with_help_type_and_escaped_labels() {
        let mut t = Textfile::new();
        t.gauge("mftd_x_files", "Files seen.", &[("node", "node_1")], 3);
        t.gauge("mftd_x_files", "ignored", &[("node", "a\"b\\c")], 1);
        let text = t.render();
        assert!(text.contains("# HELP mftd_x_files Files seen."), "{text}");
        assert!(text.contains("# TYPE mftd_x_files gauge"), "{text}");
        assert!(text.contains("mftd_x_files{node=\"node_1\"} 3"), "{text}");
        assert!(text.contains(r#"mftd_x_files{node="a\"b\\c"} 1"#), "{text}");
    }
}
