//! Presence: the ledger's third projection, per user. Who is online, on which
//! devices, and whether any of them is in a voice session; and the presence events
//! (`user.online`, `user.offline`, `user.voice_started`, `user.voice_ended`) that
//! tell subscribers when that changes.
//!
//! A [`PresenceRecord`] is kept from connection views, not from raw events: the
//! views are already convergent, and [`PresenceRecord::observe`] takes from a view
//! only what is a max or a latest-wins by the view's own event ids, so a user's
//! presence converges too whatever the order in which its connections' views come
//! (`presence/tests.rs` checks it against the in-order fold).
//!
//! Time enters in one place only, [`PresenceRecord::settle`], which decides what
//! subscribers are told: a device past its `live_until` (a ghost) no longer counts,
//! and a user whose last device ended is told `user.offline` only once `grace` has
//! passed without a device coming back, so a reconnect or a move between devices
//! does not flicker offline and online.

use chrono::TimeDelta;
use sha2::{Digest, Sha256};
use ulid::Ulid;

use super::ids::{ConnectionId, EventId, UserId};
use super::time::Timestamp;
use super::view::ConnectionInfo;

/// How long a user whose last connection ended stays "online" to subscribers.
pub const DEFAULT_GRACE: TimeDelta = TimeDelta::seconds(5);
/// Presence events kept per user for sinks that are down; older ones are dropped
/// (and counted) beyond it, so a sink that never comes back cannot grow a record
/// without end (a DynamoDB item holds at most 400 KB).
pub const OUTBOX_LIMIT: usize = 100;
/// How long the writer of new events has to deliver them before a check does.
pub const DELIVERY_CLAIM: TimeDelta = TimeDelta::seconds(30);

/// One live connection of a user, as presence shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub connection_id: ConnectionId,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub connected_at: Timestamp,
    /// The connection's `live_until` when its view was last observed: past it, the
    /// connection is a ghost and no longer counts.
    pub live_until: Timestamp,
    /// The voice session the connection is in, and when its latest voice event was.
    pub voice: Option<Timestamp>,
    /// The view's latest event: a view older than the one already observed is ignored.
    pub last_event_id: EventId,
}

impl Device {
    fn of(view: &ConnectionInfo) -> Option<Self> {
        let live_until = view.live_until()?;
        Some(Self {
            connection_id: view.connection_id.clone(),
            ip_address: view.ip_address.clone(),
            user_agent: view.user_agent.clone(),
            connected_at: view.created_at,
            live_until,
            voice: view.voice_session_id.as_ref().map(|_| voice_time(view)),
            last_event_id: view.last_event_id,
        })
    }

    /// Whether the connection still counts at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        now < self.live_until
    }
}

/// When the view's voice state was last set (its latest voice event), else its latest event.
fn voice_time(view: &ConnectionInfo) -> Timestamp {
    view.voice_event_id.map_or(view.last_activity, |event_id| event_id.timestamp())
}

/// The latest change a view shows to its user's presence: its opening, its latest
/// voice event, its latest gone observation, its end. Each only grows as the view
/// sees more events (a terminal disconnect stays, and then the latest event time
/// is its end), so the maximum over the views a record observes does not depend on
/// their order.
fn changed_at(view: &ConnectionInfo) -> Timestamp {
    let mut changed = view.created_at;
    if let Some(voice_event_id) = view.voice_event_id {
        changed = changed.max(voice_event_id.timestamp());
    }
    if let Some(gone) = &view.gone {
        changed = changed.max(gone.at);
    }
    if view.disconnected_event_id.is_some() {
        changed = changed.max(view.last_activity);
    }
    changed
}

/// When a view's connection stopped counting: its disconnect, or the moment it
/// became a ghost, or (still live) now.
fn ended_at(view: &ConnectionInfo) -> Timestamp {
    view.disconnected_at.or(view.live_until()).unwrap_or(view.last_activity)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PresenceStatus {
    Online,
    Offline,
}

impl PresenceStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            PresenceStatus::Online => "ONLINE",
            PresenceStatus::Offline => "OFFLINE",
        }
    }
}

/// A user's presence, as read: the projection of the contract's JSON objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub user_id: UserId,
    pub status: PresenceStatus,
    /// The live devices, oldest first.
    pub devices: Vec<Device>,
    pub in_voice: bool,
    pub last_seen: Option<Timestamp>,
    pub changed_at: Option<Timestamp>,
}

/// What a presence event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PresenceEventType {
    Online,
    Offline,
    VoiceStarted,
    VoiceEnded,
}

impl PresenceEventType {
    pub fn as_str(&self) -> &'static str {
        match self {
            PresenceEventType::Online => "user.online",
            PresenceEventType::Offline => "user.offline",
            PresenceEventType::VoiceStarted => "user.voice_started",
            PresenceEventType::VoiceEnded => "user.voice_ended",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [Self::Online, Self::Offline, Self::VoiceStarted, Self::VoiceEnded]
            .into_iter()
            .find(|kind| kind.as_str() == value)
    }
}

/// A change of a user's presence, for subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEvent {
    /// Stable: derived from the user, the event's place in the user's presence
    /// events and what caused it, so publishing it again gives the same id.
    pub event_id: String,
    pub kind: PresenceEventType,
    pub user_id: UserId,
    /// When the change happened (the causing connection's event time).
    pub at: Timestamp,
    /// Live connections after the change.
    pub connections: usize,
}

/// What subscribers were last told.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Told {
    pub online: bool,
    pub in_voice: bool,
    /// Presence events made so far for this user (each event's place, in its id).
    pub events: u64,
}

/// The user's last device ended at `since` (`cause` names it); `user.offline` waits
/// for the grace period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOffline {
    pub since: Timestamp,
    pub cause: String,
}

/// A presence event not yet delivered to every sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub event: PresenceEvent,
    /// The sinks that have not acknowledged it yet, by name.
    pub sinks: Vec<String>,
}

/// A user's stored presence: the projection, what subscribers were told, and the
/// events still owed to sinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRecord {
    pub user_id: UserId,
    /// The devices whose latest observed view was live, oldest first. Some may be
    /// past their `live_until` until the next [`PresenceRecord::settle`].
    pub devices: Vec<Device>,
    pub last_seen: Option<Timestamp>,
    pub changed_at: Option<Timestamp>,
    pub told: Told,
    pub pending_offline: Option<PendingOffline>,
    pub outbox: Vec<Outgoing>,
    /// Failed delivery rounds since the last success, and when to try again.
    pub delivery_failures: u32,
    pub retry_at: Option<Timestamp>,
}

impl PresenceRecord {
    pub fn new(user_id: UserId) -> Self {
        Self {
            user_id,
            devices: Vec::new(),
            last_seen: None,
            changed_at: None,
            told: Told::default(),
            pending_offline: None,
            outbox: Vec::new(),
            delivery_failures: 0,
            retry_at: None,
        }
    }

    /// Takes in a connection's current view (of this user; others are ignored).
    /// Order-free: the device is replaced only by a view that has seen more, and
    /// `last_seen` and `changed_at` are maxima.
    pub fn observe(&mut self, view: &ConnectionInfo) {
        if view.user_id != self.user_id {
            return;
        }
        let known = self.devices.iter().position(|device| device.connection_id == view.connection_id);
        if known.is_some_and(|index| self.devices[index].last_event_id > view.last_event_id) {
            return;
        }
        self.last_seen = max_of(self.last_seen, view.last_activity);
        self.changed_at = max_of(self.changed_at, changed_at(view));
        if let Some(index) = known {
            self.devices.remove(index);
        }
        match Device::of(view) {
            Some(device) => self.devices.push(device),
            None => self.note_end(view.connection_id.as_str(), ended_at(view)),
        }
        self.devices.sort_by(|a, b| (a.connected_at, &a.connection_id).cmp(&(b.connected_at, &b.connection_id)));
    }

    /// A device stopped counting at `at`: the latest such end is when the user went
    /// offline, if no device is left.
    fn note_end(&mut self, connection_id: &str, at: Timestamp) {
        if self.told.online && self.pending_offline.as_ref().is_none_or(|pending| pending.since < at) {
            self.pending_offline =
                Some(PendingOffline { since: at, cause: format!("{connection_id}@{}", at.epoch_millis()) });
        }
    }

    /// The devices that count at `now`.
    pub fn live_devices(&self, now: Timestamp) -> impl Iterator<Item = &Device> {
        self.devices.iter().filter(move |device| device.is_live(now))
    }

    /// The presence as read at `now`.
    pub fn presence(&self, now: Timestamp) -> Presence {
        let devices: Vec<Device> = self.live_devices(now).cloned().collect();
        Presence {
            user_id: self.user_id.clone(),
            status: if devices.is_empty() { PresenceStatus::Offline } else { PresenceStatus::Online },
            in_voice: devices.iter().any(|device| device.voice.is_some()),
            devices,
            last_seen: self.last_seen,
            changed_at: self.changed_at,
        }
    }

    /// Decides at `now` what subscribers must be told, and returns those events in
    /// order (each also queued for every sink in `sinks`): ghosts are dropped,
    /// `user.online` and `user.voice_*` go at once, `user.offline` once the last
    /// device has been gone for `grace`.
    pub fn settle(&mut self, now: Timestamp, grace: TimeDelta, sinks: &[String]) -> Vec<PresenceEvent> {
        let ghosts: Vec<Device> = self.devices.iter().filter(|device| !device.is_live(now)).cloned().collect();
        self.devices.retain(|device| device.is_live(now));
        for ghost in ghosts {
            self.note_end(ghost.connection_id.as_str(), ghost.live_until);
        }
        let mut events = Vec::new();
        let in_voice = self.devices.iter().find_map(|device| device.voice.map(|at| (cause_of(device, at), at)));
        if let Some(first) = self.devices.first() {
            self.pending_offline = None;
            if !self.told.online {
                let (cause, at) = (cause_of(first, first.connected_at), first.connected_at);
                events.push(self.event(PresenceEventType::Online, at, &cause));
            }
        }
        match in_voice {
            Some((cause, at)) if !self.told.in_voice => {
                events.push(self.event(PresenceEventType::VoiceStarted, at, &cause));
            }
            None if self.told.in_voice => {
                let at = self.changed_at.unwrap_or(now);
                events.push(self.event(PresenceEventType::VoiceEnded, at, &format!("{}", at.epoch_millis())));
            }
            _ => {}
        }
        if self.devices.is_empty() && self.told.online {
            let pending = self
                .pending_offline
                .clone()
                .unwrap_or(PendingOffline { since: now, cause: format!("now@{}", now.epoch_millis()) });
            if now >= pending.since.plus(grace) {
                self.pending_offline = None;
                events.push(self.event(PresenceEventType::Offline, pending.since, &pending.cause));
            } else {
                self.pending_offline = Some(pending);
            }
        }
        for event in &events {
            self.outbox.push(Outgoing { event: event.clone(), sinks: sinks.to_vec() });
        }
        self.outbox.retain(|outgoing| !outgoing.sinks.is_empty());
        if !self.outbox.is_empty() && self.retry_at.is_none() {
            // The writer of this record delivers now; a check finds it only if that
            // writer did not get to it (it stopped, or lost its write).
            self.retry_at = Some(now.plus(DELIVERY_CLAIM));
        }
        events
    }

    /// Whether a delivery should be tried at `now`: no failed round yet, or the
    /// back-off after the last one has passed.
    pub fn delivery_due(&self, now: Timestamp) -> bool {
        self.delivery_failures == 0 || self.retry_at.is_none_or(|retry_at| retry_at <= now)
    }

    /// Makes the next presence event and records that subscribers were told it.
    fn event(&mut self, kind: PresenceEventType, at: Timestamp, cause: &str) -> PresenceEvent {
        match kind {
            PresenceEventType::Online => self.told.online = true,
            PresenceEventType::Offline => self.told.online = false,
            PresenceEventType::VoiceStarted => self.told.in_voice = true,
            PresenceEventType::VoiceEnded => self.told.in_voice = false,
        }
        self.told.events += 1;
        PresenceEvent {
            event_id: presence_event_id(&self.user_id, self.told.events, kind, at, cause),
            kind,
            user_id: self.user_id.clone(),
            at,
            connections: self.devices.len(),
        }
    }

    /// Drops the oldest queued events beyond [`OUTBOX_LIMIT`]; returns how many.
    pub fn trim_outbox(&mut self) -> usize {
        let excess = self.outbox.len().saturating_sub(OUTBOX_LIMIT);
        self.outbox.drain(..excess);
        excess
    }

    /// `sink` has acknowledged the events with these ids.
    pub fn delivered(&mut self, sink: &str, event_ids: &[String]) {
        for outgoing in &mut self.outbox {
            if event_ids.contains(&outgoing.event.event_id) {
                outgoing.sinks.retain(|name| name != sink);
            }
        }
        self.outbox.retain(|outgoing| !outgoing.sinks.is_empty());
    }

    /// The events still owed to `sink`, in order.
    pub fn owed_to(&self, sink: &str) -> Vec<PresenceEvent> {
        self.outbox
            .iter()
            .filter(|outgoing| outgoing.sinks.iter().any(|name| name == sink))
            .map(|outgoing| outgoing.event.clone())
            .collect()
    }

    /// A delivery round failed at `now`: the next one waits longer each time (1 s,
    /// 2 s, 4 s ... at most 5 minutes).
    pub fn delivery_failed(&mut self, now: Timestamp) {
        self.delivery_failures = self.delivery_failures.saturating_add(1);
        let wait = 1i64 << self.delivery_failures.min(9).saturating_sub(1);
        self.retry_at = Some(now.plus(TimeDelta::seconds(wait.min(300))));
    }

    /// Every queued event was delivered.
    pub fn delivery_succeeded(&mut self) {
        if self.outbox.is_empty() {
            self.delivery_failures = 0;
            self.retry_at = None;
        }
    }

    /// When this record next needs [`PresenceRecord::settle`] or a delivery without
    /// a new view: a pending offline's end of grace, the first device's
    /// `live_until`, a delivery retry. `None`: nothing will happen by itself.
    pub fn check_at(&self, grace: TimeDelta) -> Option<Timestamp> {
        let offline = self.pending_offline.as_ref().map(|pending| pending.since.plus(grace));
        let ghost = self.devices.iter().map(|device| device.live_until).min();
        let retry =
            if self.outbox.is_empty() { None } else { Some(self.retry_at.unwrap_or(Timestamp::from_epoch_millis(0))) };
        [offline, ghost, retry].into_iter().flatten().min()
    }
}

fn cause_of(device: &Device, at: Timestamp) -> String {
    format!("{}@{}", device.connection_id, at.epoch_millis())
}

fn max_of(current: Option<Timestamp>, candidate: Timestamp) -> Option<Timestamp> {
    Some(current.map_or(candidate, |current| current.max(candidate)))
}

/// A ULID at the event's time whose random part is a hash of the user, the event's
/// place among the user's presence events, its type and its cause: the same event
/// made again (a redelivered batch, a retried write) gets the same id.
fn presence_event_id(user_id: &UserId, place: u64, kind: PresenceEventType, at: Timestamp, cause: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [user_id.as_str().as_bytes(), &place.to_be_bytes(), kind.as_str().as_bytes(), cause.as_bytes()] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut random = [0u8; 16];
    random[6..].copy_from_slice(&digest[..10]);
    Ulid::from_parts(at.epoch_millis_u64(), u128::from_be_bytes(random)).to_string()
}

#[cfg(test)]
mod tests;
