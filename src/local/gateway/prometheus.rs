//! `GET /metrics`: the process's counters in the Prometheus text format, behind
//! the `Host` rule and the dashboard's token. The same counters the Lambdas write
//! as EMF lines, named in snake case with the `wsledger_` prefix.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::local::AppState;
use crate::metrics::{Metrics, names};

/// `EventsAppended` → `events_appended`.
fn snake_case(name: &str) -> String {
    let mut snake = String::with_capacity(name.len() + 4);
    for (index, character) in name.chars().enumerate() {
        if character.is_ascii_uppercase() {
            if index > 0 {
                snake.push('_');
            }
            snake.push(character.to_ascii_lowercase());
        } else {
            snake.push(character);
        }
    }
    snake
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The Prometheus text exposition of `metrics`.
pub fn render(metrics: &Metrics) -> String {
    let mut counters: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, count) in metrics.counts() {
        let name = format!("wsledger_{}_total", snake_case(key.name));
        let labels = match &key.dimension {
            Some((label, value)) => format!("{{{}=\"{}\"}}", label.to_ascii_lowercase(), escape(value)),
            None => String::new(),
        };
        counters.entry(name.clone()).or_default().push(format!("{name}{labels} {count}"));
    }
    let mut text = String::new();
    for (name, samples) in counters {
        let _ = writeln!(text, "# TYPE {name} counter");
        for sample in samples {
            let _ = writeln!(text, "{sample}");
        }
    }
    for (name, value) in metrics.gauges() {
        let name = format!("wsledger_{}", snake_case(name));
        let _ = writeln!(text, "# TYPE {name} gauge\n{name} {value}");
    }
    text
}

/// What `/metrics` needs: the counters, the open sockets, and the dashboard's token.
#[derive(Clone)]
pub(crate) struct MetricsState {
    metrics: Arc<crate::metrics::Metrics>,
    registry: Arc<super::registry::Registry>,
    dashboard: Option<Arc<crate::local::dashboard::Dashboard>>,
    dashboard_token: Option<String>,
}

impl axum::extract::FromRef<Arc<AppState>> for MetricsState {
    fn from_ref(state: &Arc<AppState>) -> Self {
        MetricsState {
            metrics: state.metrics.clone(),
            registry: state.registry.clone(),
            dashboard: state.dashboard.clone(),
            dashboard_token: state.config.dashboard_token.clone(),
        }
    }
}

pub(crate) async fn metrics(
    State(state): State<MetricsState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(dashboard) = &state.dashboard
        && !dashboard.allows(&headers, &query)
    {
        return (StatusCode::UNAUTHORIZED, "/metrics needs ?token=<--dashboard-token>").into_response();
    }
    if let Some(token) = &state.dashboard_token
        && state.dashboard.is_none()
        && !super::exposure::token_matches(token, super::exposure::presented_token(&headers, &query).as_deref())
    {
        return (StatusCode::UNAUTHORIZED, "/metrics needs ?token=<--dashboard-token>").into_response();
    }
    state.metrics.observe(names::OPEN_CONNECTIONS, state.registry.len() as f64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], render(&state.metrics)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_in_the_text_format() {
        let metrics = Metrics::new();
        metrics.add(names::MESSAGES, 3);
        metrics.add_by(names::REJECTED, "Code", "invalid_json", 1);
        metrics.add_by(names::REJECTED, "Code", "too_large", 2);
        metrics.observe(names::PROJECTION_LAG_MS, 12.0);
        let text = render(&metrics);
        assert!(text.contains("# TYPE wsledger_messages_total counter\nwsledger_messages_total 3\n"), "{text}");
        assert!(text.contains("wsledger_rejected_total{code=\"invalid_json\"} 1\n"), "{text}");
        assert!(text.contains("wsledger_rejected_total{code=\"too_large\"} 2\n"), "{text}");
        assert_eq!(text.matches("# TYPE wsledger_rejected_total counter").count(), 1);
        assert!(text.contains("# TYPE wsledger_projection_lag_ms gauge\nwsledger_projection_lag_ms 12\n"), "{text}");
    }
}
