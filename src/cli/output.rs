//! Printing events and views: aligned tables, JSON, NDJSON and CSV. JSON objects use
//! the stored attribute names (`adapters::item`), the same on every store.

use std::io::{self, Write};

use chrono::Local;
use clap::ValueEnum;

use crate::adapters::stored::{EventItem, PresenceJson, ViewItem};
use crate::domain::presence::Presence;
use crate::domain::{ConnectionEvent, ConnectionInfo, EventEnvelope, Timestamp};
use crate::usage::UsageRow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns (the default on a terminal).
    Table,
    /// One JSON array (the default when piped).
    Json,
    /// One JSON object per line, written as pages arrive.
    Ndjson,
    /// A header row, then RFC 4180 rows.
    Csv,
}

impl Format {
    pub fn or_default(format: Option<Format>) -> Format {
        use std::io::IsTerminal;
        format.unwrap_or(if io::stdout().is_terminal() { Format::Table } else { Format::Json })
    }
}

const EVENT_COLUMNS: [&str; 18] = [
    "connectionId",
    "eventId",
    "type",
    "userId",
    "at",
    "connectedAt",
    "requestId",
    "ipAddress",
    "userAgent",
    "sessionId",
    "messageCount",
    "audioFormat",
    "reason",
    "statusCode",
    "detail",
    "expiresAt",
    "lastSeq",
    "replayed",
];

const VIEW_COLUMNS: [&str; 15] = [
    "connectionId",
    "userId",
    "sessionId",
    "status",
    "ipAddress",
    "userAgent",
    "createdAt",
    "lastActivity",
    "disconnectedAt",
    "disconnectReason",
    "disconnectStatusCode",
    "disconnectDetail",
    "voiceSessionId",
    "audioFormat",
    "lastEventId",
];

fn text<T: ToString>(value: &Option<T>) -> String {
    value.as_ref().map(ToString::to_string).unwrap_or_default()
}

fn event_row(event: &EventEnvelope) -> Vec<String> {
    let item = EventItem::from(event);
    vec![
        item.connection_id,
        item.event_id,
        item.kind,
        item.user_id,
        item.at,
        item.connected_at,
        item.request_id,
        text(&item.ip_address),
        text(&item.user_agent),
        text(&item.session_id),
        text(&item.message_count),
        text(&item.audio_format),
        text(&item.reason),
        text(&item.status_code),
        text(&item.detail),
        text(&item.expires_at),
        text(&item.last_seq),
        text(&item.replayed),
    ]
}

fn view_row(view: &ConnectionInfo) -> Vec<String> {
    let item = ViewItem::new(view, 0);
    vec![
        item.connection_id,
        item.user_id,
        text(&item.session_id),
        item.status,
        text(&item.ip_address),
        text(&item.user_agent),
        item.created_at,
        item.last_activity,
        text(&item.disconnected_at),
        text(&item.disconnect_reason),
        text(&item.disconnect_status_code),
        text(&item.disconnect_detail),
        text(&item.voice_session_id),
        text(&item.audio_format),
        item.last_event_id,
    ]
}

/// Writes events as pages arrive: NDJSON and CSV stream, JSON and tables are written at the end.
pub struct EventWriter<W: Write> {
    out: W,
    format: Format,
    local_time: bool,
    pending: Vec<EventEnvelope>,
}

fn csv_error(error: csv::Error) -> io::Error {
    io::Error::other(error)
}

/// RFC 4180 rows (CRLF-free, quoted where needed) as bytes.
fn csv_rows<'a>(rows: impl IntoIterator<Item = Vec<String>>, header: Option<&'a [&'a str]>) -> io::Result<Vec<u8>> {
    let mut csv = csv::Writer::from_writer(Vec::new());
    if let Some(header) = header {
        csv.write_record(header).map_err(csv_error)?;
    }
    for row in rows {
        csv.write_record(row).map_err(csv_error)?;
    }
    csv.into_inner().map_err(|error| io::Error::other(error.to_string()))
}

impl<W: Write> EventWriter<W> {
    pub fn new(mut out: W, format: Format, local_time: bool) -> io::Result<Self> {
        if format == Format::Csv {
            out.write_all(&csv_rows([], Some(&EVENT_COLUMNS))?)?;
        }
        Ok(Self { out, format, local_time, pending: Vec::new() })
    }

    pub fn write_page(&mut self, events: &[EventEnvelope]) -> io::Result<()> {
        match self.format {
            Format::Ndjson => {
                for event in events {
                    serde_json::to_writer(&mut self.out, &EventItem::from(event))?;
                    self.out.write_all(b"\n")?;
                }
                self.out.flush()
            }
            Format::Csv => {
                self.out.write_all(&csv_rows(events.iter().map(event_row), None)?)?;
                self.out.flush()
            }
            Format::Json | Format::Table => {
                self.pending.extend_from_slice(events);
                Ok(())
            }
        }
    }

    pub fn finish(mut self) -> io::Result<()> {
        match self.format {
            Format::Json => {
                let items: Vec<EventItem> = self.pending.iter().map(EventItem::from).collect();
                serde_json::to_writer_pretty(&mut self.out, &items)?;
                self.out.write_all(b"\n")?;
            }
            Format::Table => {
                let rows: Vec<Vec<String>> = self
                    .pending
                    .iter()
                    .map(|event| {
                        vec![
                            show_time(event.at, self.local_time),
                            event.kind().to_string(),
                            event.connection_id.to_string(),
                            event.user_id.to_string(),
                            details(&event.event),
                        ]
                    })
                    .collect();
                table(&mut self.out, &["AT", "TYPE", "CONNECTION", "USER", "DETAILS"], &rows)?;
                writeln!(self.out, "{} event(s)", self.pending.len())?;
            }
            Format::Ndjson | Format::Csv => {}
        }
        self.out.flush()
    }
}

/// Writes views in `format`.
pub fn write_views(mut out: impl Write, format: Format, local_time: bool, views: &[ConnectionInfo]) -> io::Result<()> {
    match format {
        Format::Json => {
            let items: Vec<serde_json::Value> = views.iter().map(ViewItem::public_json).collect();
            serde_json::to_writer_pretty(&mut out, &items)?;
            out.write_all(b"\n")?;
        }
        Format::Ndjson => {
            for view in views {
                serde_json::to_writer(&mut out, &ViewItem::public_json(view))?;
                out.write_all(b"\n")?;
            }
        }
        Format::Csv => {
            out.write_all(&csv_rows(views.iter().map(view_row), Some(&VIEW_COLUMNS))?)?;
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = views
                .iter()
                .map(|view| {
                    vec![
                        view.connection_id.to_string(),
                        view.user_id.to_string(),
                        view.status.as_str().to_owned(),
                        view.ip_address.clone().unwrap_or_default(),
                        view.user_agent.clone().unwrap_or_default(),
                        show_time(view.created_at, local_time),
                        show_time(view.last_activity, local_time),
                        view.disconnected_at.map(|at| show_time(at, local_time)).unwrap_or_default(),
                        view.disconnect_reason.as_ref().map(ToString::to_string).unwrap_or_default(),
                        view.voice_session_id.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            table(
                &mut out,
                &[
                    "CONNECTION",
                    "USER",
                    "STATUS",
                    "IP",
                    "USER AGENT",
                    "CREATED",
                    "LAST ACTIVITY",
                    "DISCONNECTED",
                    "REASON",
                    "VOICE",
                ],
                &rows,
            )?;
            writeln!(out, "{} connection(s)", views.len())?;
        }
    }
    out.flush()
}

/// The CSV columns of `wsledger presence` (`devices` as the contract's JSON array).
const PRESENCE_COLUMNS: [&str; 7] = ["userId", "status", "connections", "devices", "inVoice", "lastSeen", "changedAt"];

/// Writes presence objects (docs/contract.md, "Round three") in `format`.
pub fn write_presence(mut out: impl Write, format: Format, local_time: bool, presence: &[Presence]) -> io::Result<()> {
    let items: Vec<PresenceJson> = presence.iter().map(PresenceJson::from).collect();
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &items)?;
            out.write_all(b"\n")?;
        }
        Format::Ndjson => {
            for item in &items {
                serde_json::to_writer(&mut out, item)?;
                out.write_all(b"\n")?;
            }
        }
        Format::Csv => {
            let rows = items.iter().map(|item| {
                vec![
                    item.user_id.clone(),
                    item.status.clone(),
                    item.connections.to_string(),
                    serde_json::to_string(&item.devices).unwrap_or_default(),
                    item.in_voice.to_string(),
                    item.last_seen.clone().unwrap_or_default(),
                    item.changed_at.clone().unwrap_or_default(),
                ]
            });
            out.write_all(&csv_rows(rows, Some(&PRESENCE_COLUMNS))?)?;
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = presence
                .iter()
                .map(|presence| {
                    let devices: Vec<String> = presence
                        .devices
                        .iter()
                        .map(|device| match &device.user_agent {
                            Some(agent) => format!("{} ({agent})", device.connection_id),
                            None => device.connection_id.to_string(),
                        })
                        .collect();
                    vec![
                        presence.user_id.to_string(),
                        presence.status.as_str().to_owned(),
                        presence.devices.len().to_string(),
                        if presence.in_voice { "yes".into() } else { String::new() },
                        presence.last_seen.map(|at| show_time(at, local_time)).unwrap_or_default(),
                        presence.changed_at.map(|at| show_time(at, local_time)).unwrap_or_default(),
                        devices.join(", "),
                    ]
                })
                .collect();
            table(&mut out, &["USER", "STATUS", "CONNECTIONS", "IN VOICE", "LAST SEEN", "CHANGED", "DEVICES"], &rows)?;
            writeln!(out, "{} user(s)", presence.len())?;
        }
    }
    out.flush()
}

/// One usage row as JSON, with the names of `wsledger usage` (durations in seconds).
pub fn usage_json(row: &UsageRow) -> serde_json::Value {
    let seconds = |ms: u64| serde_json::json!(ms as f64 / 1_000.0);
    let mut value = serde_json::json!({ "userId": row.user_id.as_str() });
    if let Some(day) = row.day {
        value["day"] = serde_json::json!(day.format("%Y-%m-%d").to_string());
    }
    value["connections"] = serde_json::json!(row.figures.connections);
    value["connectedSeconds"] = seconds(row.figures.connected_ms);
    value["messages"] = serde_json::json!(row.figures.messages);
    value["voiceSessions"] = serde_json::json!(row.figures.voice_sessions);
    value["voiceSeconds"] = seconds(row.figures.voice_ms);
    value
}

/// Writes usage rows in `format`.
pub fn write_usage(mut out: impl Write, format: Format, by_day: bool, rows: &[UsageRow]) -> io::Result<()> {
    let seconds = |ms: u64| format!("{:.3}", ms as f64 / 1_000.0);
    let cells = |row: &UsageRow| {
        let mut cells = vec![row.user_id.to_string()];
        if by_day {
            cells.push(row.day.map(|day| day.format("%Y-%m-%d").to_string()).unwrap_or_default());
        }
        cells.extend([
            row.figures.connections.to_string(),
            seconds(row.figures.connected_ms),
            row.figures.messages.to_string(),
            row.figures.voice_sessions.to_string(),
            seconds(row.figures.voice_ms),
        ]);
        cells
    };
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &rows.iter().map(usage_json).collect::<Vec<_>>())?;
            out.write_all(b"\n")?;
        }
        Format::Ndjson => {
            for row in rows {
                serde_json::to_writer(&mut out, &usage_json(row))?;
                out.write_all(b"\n")?;
            }
        }
        Format::Csv => {
            let mut header = vec!["userId"];
            if by_day {
                header.push("day");
            }
            header.extend(["connections", "connectedSeconds", "messages", "voiceSessions", "voiceSeconds"]);
            out.write_all(&csv_rows(rows.iter().map(cells), Some(&header))?)?;
        }
        Format::Table => {
            let mut header = vec!["USER"];
            if by_day {
                header.push("DAY (UTC)");
            }
            header.extend(["CONNECTIONS", "CONNECTED S", "MESSAGES", "VOICE SESSIONS", "VOICE S"]);
            table(&mut out, &header, &rows.iter().map(cells).collect::<Vec<_>>())?;
            writeln!(out, "{} row(s)", rows.len())?;
        }
    }
    out.flush()
}

fn show_time(at: Timestamp, local_time: bool) -> String {
    if local_time {
        at.as_datetime().with_timezone(&Local).format("%Y-%m-%d %H:%M:%S%.3f %:z").to_string()
    } else {
        at.to_rfc3339()
    }
}

fn details(event: &ConnectionEvent) -> String {
    let mut parts = Vec::new();
    match event {
        ConnectionEvent::Connected { ip_address, user_agent } => {
            parts.extend(ip_address.as_ref().map(|ip| format!("ip={ip}")));
            parts.extend(user_agent.as_ref().map(|agent| format!("agent={agent}")));
        }
        ConnectionEvent::Activity { session_id, message_count } => {
            parts.push(format!("messages={message_count}"));
            parts.extend(session_id.as_ref().map(|session| format!("session={session}")));
        }
        ConnectionEvent::VoiceStarted { session_id, audio_format } => {
            parts.push(format!("session={session_id}"));
            parts.push(format!("format={audio_format}"));
        }
        ConnectionEvent::VoiceEnded { session_id } => parts.push(format!("session={session_id}")),
        ConnectionEvent::Disconnected { reason, status_code, detail, message_count } => {
            parts.push(format!("reason={reason}"));
            parts.extend(status_code.map(|code| format!("code={code}")));
            parts.extend(detail.as_ref().map(|detail| format!("detail={detail:?}")));
            if *message_count > 0 {
                parts.push(format!("messages={message_count}"));
            }
        }
        ConnectionEvent::Resumed { last_seq, replayed, failure } => {
            parts.push(format!("lastSeq={last_seq}"));
            parts.push(format!("replayed={replayed}"));
            parts.extend(failure.as_ref().map(|failure| format!("failed={failure}")));
        }
    }
    parts.join(" ")
}

/// Aligned columns, measured in display width (a wide character in a user agent
/// takes two columns, a combining mark none).
fn table(out: &mut impl Write, headers: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    use unicode_width::UnicodeWidthStr;
    let mut widths: Vec<usize> = headers.iter().map(|header| header.width()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.width());
        }
    }
    let line = |out: &mut dyn Write, cells: &mut dyn Iterator<Item = &str>| -> io::Result<()> {
        let mut text = String::new();
        for (index, cell) in cells.enumerate() {
            if index > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            let pad = widths[index].saturating_sub(UnicodeWidthStr::width(cell));
            text.extend(std::iter::repeat_n(' ', pad));
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(out, &mut headers.iter().copied())?;
    for row in rows {
        line(out, &mut row.iter().map(String::as_str))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ConnectionId, DisconnectReason, UserId};

    fn event() -> EventEnvelope {
        EventEnvelope::for_request(
            ConnectionId::parse("L0SM9cOFvHcCIhw=").unwrap(),
            UserId::parse("user123").unwrap(),
            "req",
            Timestamp::from_epoch_millis(1_764_000_000_123),
            Timestamp::from_epoch_millis(1_764_000_000_000),
            ConnectionEvent::Disconnected {
                reason: DisconnectReason::Client,
                status_code: Some(1000),
                detail: Some("said \"bye\", then left".into()),
                message_count: 0,
            },
        )
    }

    #[test]
    fn csv_quotes_as_rfc_4180_says() {
        let mut out = Vec::new();
        let mut writer = EventWriter::new(&mut out, Format::Csv, false).unwrap();
        writer.write_page(&[event()]).unwrap();
        writer.finish().unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), EVENT_COLUMNS.join(","));
        let row = lines.next().unwrap();
        assert!(row.contains(r#","said ""bye"", then left","#), "{row}");
        assert!(row.starts_with("L0SM9cOFvHcCIhw=,"));
    }

    #[test]
    fn json_uses_the_stored_attribute_names() {
        let mut out = Vec::new();
        let mut writer = EventWriter::new(&mut out, Format::Json, false).unwrap();
        writer.write_page(&[event()]).unwrap();
        writer.finish().unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value[0]["type"], "Disconnected");
        assert_eq!(value[0]["at"], "2025-11-24T16:00:00.123Z");
        assert_eq!(value[0]["statusCode"], 1000);
        assert!(value[0].get("timeBucket").is_none());
    }

    #[test]
    fn tables_align_wide_characters_by_display_width() {
        let mut out = Vec::new();
        table(&mut out, &["AGENT", "X"], &[vec!["测试浏览器".into(), "1".into()], vec!["curl".into(), "2".into()]])
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        // The second column starts at the same display column on every line.
        let starts: Vec<usize> = text
            .lines()
            .map(|line| unicode_width::UnicodeWidthStr::width(&line[..line.rfind(' ').unwrap() + 1]))
            .collect();
        assert_eq!(starts, vec![12, 12, 12], "{text}");
    }

    #[test]
    fn tables_align_columns() {
        let mut out = Vec::new();
        table(&mut out, &["A", "LONGER"], &[vec!["xyz".into(), "1".into()], vec!["q".into(), "22".into()]]).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "A    LONGER\nxyz  1\nq    22\n");
    }
}
