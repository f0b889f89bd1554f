//! CloudWatch Embedded Metric Format: metrics as JSON log lines that CloudWatch
//! Logs turns into metrics, with no API call (the format Lambda users expect, and
//! what Powertools writes). One line per set of dimensions.
//!
//! ```json
//! {"_aws":{"Timestamp":1764000000000,"CloudWatchMetrics":[{"Namespace":"wsledger",
//!   "Dimensions":[["FunctionName"]],"Metrics":[{"Name":"Messages","Unit":"Count"}]}]},
//!  "FunctionName":"wsledger-handler","Messages":3}
//! ```

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::metrics::{Delta, names};

/// Where the lines say the metrics belong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmfTarget {
    /// `METRICS_NAMESPACE`, default `wsledger`.
    pub namespace: String,
    /// `AWS_LAMBDA_FUNCTION_NAME`: the `FunctionName` dimension of every metric.
    pub function_name: String,
}

/// The default namespace.
pub const DEFAULT_NAMESPACE: &str = "wsledger";

fn unit(name: &str) -> &'static str {
    if name == names::PROJECTION_LAG_MS { "Milliseconds" } else { "Count" }
}

/// A metric's extra dimension: none, or one name and value.
type Dimension = Option<(&'static str, String)>;

/// The EMF lines of `delta` at `timestamp_millis` (none when nothing changed).
pub fn lines(delta: &Delta, target: &EmfTarget, timestamp_millis: i64) -> Vec<String> {
    // Metrics grouped by their extra dimension (none, or one name and value).
    let mut groups: BTreeMap<Dimension, Vec<(&'static str, f64)>> = BTreeMap::new();
    for (key, count) in &delta.counts {
        groups.entry(key.dimension.clone()).or_default().push((key.name, *count as f64));
    }
    for (name, value) in &delta.maxima {
        groups.entry(None).or_default().push((name, *value));
    }
    groups
        .into_iter()
        .map(|(dimension, values)| {
            let mut line = Map::new();
            line.insert("FunctionName".into(), json!(target.function_name));
            // A dimensioned metric is also published under `FunctionName` alone: its
            // total, which alarms watch.
            let dimension_sets = match &dimension {
                Some((name, value)) => {
                    line.insert((*name).to_owned(), json!(value));
                    json!([["FunctionName", name], ["FunctionName"]])
                }
                None => json!([["FunctionName"]]),
            };
            let metrics: Vec<Value> =
                values.iter().map(|(name, _)| json!({ "Name": name, "Unit": unit(name) })).collect();
            for (name, value) in &values {
                line.insert((*name).to_owned(), json!(value));
            }
            line.insert(
                "_aws".into(),
                json!({
                    "Timestamp": timestamp_millis,
                    "CloudWatchMetrics": [{
                        "Namespace": target.namespace,
                        "Dimensions": dimension_sets,
                        "Metrics": metrics,
                    }],
                }),
            );
            Value::Object(line).to_string()
        })
        .collect()
}

/// Adds what one EMF line (as [`lines`] writes them) says to `metrics`: its
/// counters by their dimension (`FunctionName` aside), its gauges as observations.
/// `serve --lambda` reads the functions' output with it, so `GET /metrics` counts
/// what the functions did. Lines that are not EMF, or names it does not know, are
/// left alone.
pub fn ingest(line: &str, metrics: &crate::metrics::Metrics) {
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(line) else { return };
    if !object.contains_key("_aws") {
        return;
    }
    let dimension = names::DIMENSIONS
        .iter()
        .find_map(|name| object.get(*name).and_then(Value::as_str).map(|value| (*name, value.to_owned())));
    for name in names::FUNCTION_METRICS {
        let Some(value) = object.get(name).and_then(Value::as_f64) else { continue };
        if name == names::PROJECTION_LAG_MS {
            metrics.observe(name, value);
            continue;
        }
        let count = value.max(0.0) as u64;
        match &dimension {
            Some((dimension, value)) => metrics.add_by(name, dimension, value, count),
            None => metrics.add(name, count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn one_line_per_dimension_set_with_the_values_at_the_top_level() {
        let metrics = Metrics::new();
        metrics.add(names::MESSAGES, 3);
        metrics.add(names::EVENTS_APPENDED, 1);
        metrics.add_by(names::REJECTED, "Code", "invalid_json", 2);
        metrics.observe(names::PROJECTION_LAG_MS, 12.0);
        let target = EmfTarget { namespace: "wsledger".into(), function_name: "f".into() };
        let lines = lines(&metrics.take(), &target, 1_764_000_000_000);
        assert_eq!(lines.len(), 2);
        let plain: Value = serde_json::from_str(&lines[0]).unwrap();
        let directive = &plain["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "wsledger");
        assert_eq!(directive["Dimensions"], json!([["FunctionName"]]));
        assert_eq!(plain["FunctionName"], "f");
        assert_eq!(plain["Messages"], 3.0);
        assert_eq!(plain["ProjectionLagMs"], 12.0);
        assert!(
            directive["Metrics"]
                .as_array()
                .unwrap()
                .contains(&json!({"Name": "ProjectionLagMs", "Unit": "Milliseconds"}))
        );
        let by_code: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(
            by_code["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["FunctionName", "Code"], ["FunctionName"]])
        );
        assert_eq!((by_code["Code"].as_str(), by_code["Rejected"].as_f64()), (Some("invalid_json"), Some(2.0)));
        assert!(super::lines(&metrics.take(), &target, 0).is_empty());
    }

    #[test]
    fn what_a_function_writes_is_counted_back() {
        let written = Metrics::new();
        written.add(names::MESSAGES, 3);
        written.add_by(names::DENIED, "Reason", "expired", 2);
        written.observe(names::PROJECTION_LAG_MS, 42.0);
        let target = EmfTarget { namespace: "wsledger".into(), function_name: "F".into() };
        let read = Metrics::new();
        for line in lines(&written.take(), &target, 0) {
            ingest(&line, &read);
        }
        ingest("not json", &read);
        ingest(r#"{"level":"INFO","Messages":9}"#, &read);
        assert_eq!(read.total(names::MESSAGES), 3);
        assert_eq!(read.count_by(names::DENIED, "expired"), 2);
        assert_eq!(read.gauge(names::PROJECTION_LAG_MS), Some(42.0));
    }
}
