//! Lease-based leader election, written directly on the `coordination.k8s.io/v1` Lease API.
//!
//! Several replicas of an operator share one `Lease`. The replica named in
//! `spec.holderIdentity` is the leader and the only one that reconciles; the others keep their
//! caches warm and take over when the leader stops renewing. The protocol follows client-go's
//! `leaderelection` package:
//!
//! * every `retry_period` each replica reads the Lease;
//! * the holder renews it (`spec.renewTime = now`);
//! * a non-holder takes it over when it is free (no `holderIdentity`) or expired;
//! * every write carries the `resourceVersion` that was read, so of two replicas racing for the
//!   same Lease exactly one wins and the other gets `409 Conflict` and stays a follower;
//! * on shutdown the leader releases the Lease by clearing `holderIdentity`, so a standby takes
//!   over at its next retry instead of waiting for expiry.
//!
//! # Guarantees
//! 1. At most one replica at a time believes it holds a given Lease *as far as the API server's
//!    optimistic concurrency is concerned*: acquisition and renewal are conditional writes.
//! 2. A leader that cannot renew for `renew_deadline` steps down (reports `false`) even if the
//!    API server is unreachable, and `renew_deadline < lease_duration` is enforced, so it stops
//!    before any standby may consider the Lease expired.
//! 3. A standby takes over an abandoned (crashed) leader's Lease at most
//!    `lease_duration + retry_period` after it last saw the Lease change, and a released one within
//!    one `retry_period`.
//!
//! # Assumptions
//! 1. Expiry is judged by the *local* monotonic clock: a Lease is expired when its record has not
//!    changed for `leaseDurationSeconds` since this replica first observed it. Wall clocks of
//!    replicas and API server may disagree; no timestamp comparison across machines is made.
//!    The first observation after start therefore waits a full lease duration before taking over a
//!    lease held by someone else.
//! 2. Identities are unique per replica (the Pod name is; see [`default_identity`]).
//!
//! # Caveats
//! 1. Leadership is advisory. Work already started when leadership is lost (in-flight reconciles)
//!    finishes; operators must keep their writes conflict-safe (resourceVersion, preconditions),
//!    which they are anyway.
//! 2. `leaseDurationSeconds` is whole seconds; sub-second durations are rounded up.
//! 3. `preferredHolder` and `strategy` (coordinated leader election) are preserved but not acted on.

use std::{sync::Mutex, time::Duration};

use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::ObjectReference,
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Client,
    api::{PostParams, Resource},
};
use thiserror::Error;
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

/// Timing and identity of one replica's participation in leader election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderElectionSettings {
    /// Name of the shared `Lease`.
    pub lease_name: String,
    /// Namespace of the shared `Lease` (usually the operator's own namespace).
    pub lease_namespace: String,
    /// This replica's identity, written to `spec.holderIdentity`; unique per replica.
    pub identity: String,
    /// How long a Lease that stopped changing is still considered held (client-go: 15s).
    pub lease_duration: Duration,
    /// How long the leader keeps acting as leader without a successful renewal (client-go: 10s).
    pub renew_deadline: Duration,
    /// Interval between two acquire/renew attempts (client-go: 2s).
    pub retry_period: Duration,
}

impl LeaderElectionSettings {
    /// Settings with client-go's default timing: lease 15s, renew deadline 10s, retry 2s.
    pub fn new(
        lease_name: impl Into<String>,
        lease_namespace: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            lease_name: lease_name.into(),
            lease_namespace: lease_namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Checks `0 < retry_period < renew_deadline < lease_duration` and non-empty names.
    ///
    /// # Errors
    /// [`LeaderElectionError::InvalidSettings`] naming the violated rule.
    pub fn validate(&self) -> Result<(), LeaderElectionError> {
        let invalid = |reason: String| Err(LeaderElectionError::InvalidSettings(reason));
        if self.lease_name.is_empty() || self.lease_namespace.is_empty() {
            return invalid("leaseName and leaseNamespace must not be empty".into());
        }
        if self.identity.is_empty() {
            return invalid("identity must not be empty".into());
        }
        if self.retry_period.is_zero() {
            return invalid("retryPeriod must be greater than zero".into());
        }
        if self.renew_deadline <= self.retry_period {
            return invalid(format!(
                "renewDeadline ({:?}) must be greater than retryPeriod ({:?})",
                self.renew_deadline, self.retry_period
            ));
        }
        if self.lease_duration <= self.renew_deadline {
            return invalid(format!(
                "leaseDuration ({:?}) must be greater than renewDeadline ({:?})",
                self.lease_duration, self.renew_deadline
            ));
        }
        Ok(())
    }

    /// An `ObjectReference` to the Lease, usable as the subject of Events about this operator.
    pub fn lease_reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some(Lease::api_version(&()).into_owned()),
            kind: Some(Lease::kind(&()).into_owned()),
            name: Some(self.lease_name.clone()),
            namespace: Some(self.lease_namespace.clone()),
            ..ObjectReference::default()
        }
    }

    fn lease_duration_seconds(&self) -> i32 {
        let millis = self.lease_duration.as_millis();
        i32::try_from(millis.div_ceil(1000)).unwrap_or(i32::MAX)
    }
}

/// A replica identity: `$POD_NAME` when set (unique within a namespace), else the host name,
/// followed by a random suffix so two processes on one host never share an identity.
pub fn default_identity() -> String {
    let base = std::env::var("POD_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "operator".to_string());
    format!("{base}_{:08x}", rand::random::<u32>())
}

/// What went wrong while electing a leader.
#[derive(Debug, Error)]
pub enum LeaderElectionError {
    /// The settings break a timing rule.
    #[error("invalid leader election settings: {0}")]
    InvalidSettings(String),
    /// Reading the Lease failed.
    #[error("reading Lease {namespace}/{name} failed: {source}")]
    Read {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Creating or updating the Lease failed for another reason than a lost race.
    #[error("writing Lease {namespace}/{name} failed: {source}")]
    Write {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// An acquire/renew round did not finish in time.
    #[error("Lease {namespace}/{name}: acquire/renew round timed out after {after:?}")]
    Timeout {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// The time allowed.
        after: Duration,
    },
}

/// What one replica should do with the Lease it just read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// The Lease does not exist: create it naming us.
    Create,
    /// We hold it: renew.
    Renew,
    /// It is free or expired: take it over (`transition` = the holder changes).
    Acquire {
        /// Whether `leaseTransitions` increments (the previous holder was someone else).
        transition: bool,
    },
    /// Someone else holds a live Lease.
    Follow {
        /// The current holder.
        holder: String,
    },
}

/// Decides what to do with a Lease spec, given how long its record has been unchanged as seen
/// by this replica. Pure; the heart of the protocol.
pub fn decide(
    spec: Option<&LeaseSpec>,
    identity: &str,
    unchanged_for: Duration,
    default_lease_duration: Duration,
) -> LeaseDecision {
    let Some(spec) = spec else {
        return LeaseDecision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return LeaseDecision::Acquire { transition: true };
    }
    if holder == identity {
        return LeaseDecision::Renew;
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .map_or(default_lease_duration, Duration::from_secs);
    if unchanged_for >= duration {
        LeaseDecision::Acquire { transition: true }
    } else {
        LeaseDecision::Follow {
            holder: holder.to_string(),
        }
    }
}

/// The spec to write for a [`LeaseDecision`] that writes (everything but `Follow`).
fn next_spec(
    decision: &LeaseDecision,
    old: Option<&LeaseSpec>,
    settings: &LeaderElectionSettings,
    now: jiff::Timestamp,
) -> LeaseSpec {
    let mut spec = old.cloned().unwrap_or_default();
    spec.holder_identity = Some(settings.identity.clone());
    spec.lease_duration_seconds = Some(settings.lease_duration_seconds());
    spec.renew_time = Some(MicroTime(now));
    match decision {
        LeaseDecision::Create => {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(0);
        }
        LeaseDecision::Acquire { transition } => {
            spec.acquire_time = Some(MicroTime(now));
            if *transition {
                spec.lease_transitions =
                    Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            }
        }
        LeaseDecision::Renew | LeaseDecision::Follow { .. } => {}
    }
    spec
}

/// The part of a Lease whose change proves its holder is alive.
#[derive(Clone, Debug, PartialEq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    acquire_time: Option<MicroTime>,
    transitions: Option<i32>,
}

impl Record {
    fn of(spec: Option<&LeaseSpec>) -> Self {
        Self {
            holder: spec.and_then(|s| s.holder_identity.clone()),
            renew_time: spec.and_then(|s| s.renew_time.clone()),
            acquire_time: spec.and_then(|s| s.acquire_time.clone()),
            transitions: spec.and_then(|s| s.lease_transitions),
        }
    }
}

/// One replica's view of the shared Lease; see the [module docs](self).
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaderElectionSettings,
    observed: Mutex<Option<(Record, Instant)>>,
}

impl LeaderElector {
    /// An elector for `settings` (validated by the caller or by [`Self::run`]).
    pub fn new(client: Client, settings: LeaderElectionSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.lease_namespace),
            settings,
            observed: Mutex::new(None),
        }
    }

    /// The settings this elector runs with.
    pub fn settings(&self) -> &LeaderElectionSettings {
        &self.settings
    }

    fn read_error(&self, source: kube::Error) -> LeaderElectionError {
        LeaderElectionError::Read {
            namespace: self.settings.lease_namespace.clone(),
            name: self.settings.lease_name.clone(),
            source,
        }
    }

    fn write_error(&self, source: kube::Error) -> LeaderElectionError {
        LeaderElectionError::Write {
            namespace: self.settings.lease_namespace.clone(),
            name: self.settings.lease_name.clone(),
            source,
        }
    }

    /// Remembers the record just read; returns how long it has been unchanged.
    fn observe(&self, record: Record) -> Duration {
        let now = Instant::now();
        let mut observed = self
            .observed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match observed.as_ref() {
            Some((previous, since)) if *previous == record => now.duration_since(*since),
            _ => {
                *observed = Some((record, now));
                Duration::ZERO
            }
        }
    }

    /// One acquire-or-renew round: read the Lease and create, renew or take it over as
    /// [`decide`] says. Returns whether this replica holds the Lease afterwards.
    ///
    /// A lost race (`409 Conflict` / `AlreadyExists`) is not an error: it returns `Ok(false)`.
    ///
    /// # Errors
    /// [`LeaderElectionError::Read`] / [`LeaderElectionError::Write`] on any other API failure.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaderElectionError> {
        let name = &self.settings.lease_name;
        let current = self
            .api
            .get_opt(name)
            .await
            .map_err(|e| self.read_error(e))?;
        let unchanged_for =
            self.observe(Record::of(current.as_ref().and_then(|l| l.spec.as_ref())));
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let decision = decide(
            spec,
            &self.settings.identity,
            unchanged_for,
            self.settings.lease_duration,
        );
        if let LeaseDecision::Follow { .. } = decision {
            return Ok(false);
        }
        let new_spec = next_spec(&decision, spec, &self.settings, jiff::Timestamp::now());
        let written = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(self.settings.lease_namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(new_spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                // The resourceVersion read stays in `lease.metadata`: the replace is conditional.
                lease.spec = Some(new_spec);
                lease.metadata.managed_fields = None;
                self.api.replace(name, &PostParams::default(), &lease).await
            }
        };
        match written {
            Ok(lease) => {
                self.observe(Record::of(lease.spec.as_ref()));
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(self.write_error(e)),
        }
    }

    /// Releases the Lease if this replica holds it: clears `holderIdentity` (conditional on the
    /// resourceVersion read) so a standby can take over immediately. Returns whether it released.
    ///
    /// # Errors
    /// [`LeaderElectionError::Read`] / [`LeaderElectionError::Write`] on API failures.
    pub async fn release(&self) -> Result<bool, LeaderElectionError> {
        let name = &self.settings.lease_name;
        // Two attempts: a conflict can only come from our own concurrent renewal or a takeover.
        for _ in 0..2 {
            let Some(mut lease) = self
                .api
                .get_opt(name)
                .await
                .map_err(|e| self.read_error(e))?
            else {
                return Ok(false);
            };
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
                return Ok(false);
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
            lease.metadata.managed_fields = None;
            match self.api.replace(name, &PostParams::default(), &lease).await {
                Ok(_) => return Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(e) => return Err(self.write_error(e)),
            }
        }
        Ok(false)
    }

    /// Runs the election until `stop` is cancelled, publishing leadership on `leading`
    /// (`true` while this replica holds the Lease). On stop, a leader releases the Lease and
    /// publishes `false`.
    ///
    /// # Errors
    /// [`LeaderElectionError::InvalidSettings`] before anything runs; API errors are logged and
    /// retried, never returned.
    pub async fn run(
        &self,
        leading: &watch::Sender<bool>,
        stop: &CancellationToken,
    ) -> Result<(), LeaderElectionError> {
        self.settings.validate()?;
        let settings = &self.settings;
        let mut last_renewal: Option<Instant> = None;
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(settings.retry_period) => {}
                }
            }
            first = false;
            let is_leader = *leading.borrow();
            // A leader must learn the outcome before its renew deadline passes; a follower's
            // round is bounded by the renew deadline too, so a hung request cannot stall it.
            let budget = match (is_leader, last_renewal) {
                (true, Some(at)) => settings.renew_deadline.saturating_sub(at.elapsed()),
                _ => settings.renew_deadline,
            };
            let round = tokio::select! {
                () = stop.cancelled() => break,
                round = tokio::time::timeout(budget, self.try_acquire_or_renew()) => round,
            };
            let round = round.unwrap_or_else(|_| {
                Err(LeaderElectionError::Timeout {
                    namespace: settings.lease_namespace.clone(),
                    name: settings.lease_name.clone(),
                    after: budget,
                })
            });
            self.publish_round(round, is_leader, &mut last_renewal, leading);
        }
        self.resign(leading).await;
        Ok(())
    }

    /// Publishes on `leading` what one acquire-or-renew `round` means for a replica that led
    /// before it (`is_leader`) or not; `last_renewal` is when this replica last renewed the Lease.
    fn publish_round(
        &self,
        round: Result<bool, LeaderElectionError>,
        is_leader: bool,
        last_renewal: &mut Option<Instant>,
        leading: &watch::Sender<bool>,
    ) {
        let settings = &self.settings;
        match round {
            Ok(true) => {
                *last_renewal = Some(Instant::now());
                if !is_leader {
                    tracing::info!(lease = %settings.lease_name, identity = %settings.identity, "acquired leadership");
                    leading.send_replace(true);
                }
            }
            Ok(false) => {
                if is_leader {
                    tracing::warn!(lease = %settings.lease_name, identity = %settings.identity, "lost leadership: the Lease is held by another replica");
                    leading.send_replace(false);
                }
            }
            Err(error) => {
                let overdue = last_renewal.is_none_or(|at| at.elapsed() >= settings.renew_deadline);
                tracing::warn!(%error, leader = is_leader, "leader election round failed");
                if is_leader && overdue {
                    tracing::warn!(lease = %settings.lease_name, identity = %settings.identity, "stepping down: no renewal within the renew deadline");
                    leading.send_replace(false);
                }
            }
        }
    }

    /// On stop: a leader releases the Lease (best effort) and publishes `false`.
    async fn resign(&self, leading: &watch::Sender<bool>) {
        let settings = &self.settings;
        if *leading.borrow() {
            match self.release().await {
                Ok(true) => tracing::info!(lease = %settings.lease_name, "released leadership"),
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "releasing the Lease failed; a standby takes over after it expires")
                }
            }
            leading.send_replace(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, duration: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: duration,
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decisions() {
        let d = Duration::from_secs(15);
        let s = Duration::from_secs;
        let cases: Vec<(&str, Option<LeaseSpec>, Duration, LeaseDecision)> = vec![
            (
                "missing lease is created",
                None,
                s(0),
                LeaseDecision::Create,
            ),
            (
                "own lease is renewed",
                Some(spec(Some("me"), Some(15))),
                s(100),
                LeaseDecision::Renew,
            ),
            (
                "released lease is taken",
                Some(spec(None, Some(1))),
                s(0),
                LeaseDecision::Acquire { transition: true },
            ),
            (
                "empty holder is free",
                Some(spec(Some(""), Some(15))),
                s(0),
                LeaseDecision::Acquire { transition: true },
            ),
            (
                "live foreign lease is followed",
                Some(spec(Some("other"), Some(15))),
                s(14),
                LeaseDecision::Follow {
                    holder: "other".into(),
                },
            ),
            (
                "expired foreign lease is taken",
                Some(spec(Some("other"), Some(15))),
                s(15),
                LeaseDecision::Acquire { transition: true },
            ),
            (
                "record duration wins over ours",
                Some(spec(Some("other"), Some(5))),
                s(6),
                LeaseDecision::Acquire { transition: true },
            ),
            (
                "missing duration falls back to ours",
                Some(spec(Some("other"), None)),
                s(6),
                LeaseDecision::Follow {
                    holder: "other".into(),
                },
            ),
            (
                "nonsense duration falls back to ours",
                Some(spec(Some("other"), Some(-3))),
                s(16),
                LeaseDecision::Acquire { transition: true },
            ),
        ];
        for (name, spec, unchanged, want) in cases {
            assert_eq!(decide(spec.as_ref(), "me", unchanged, d), want, "{name}");
        }
    }

    #[test]
    fn next_spec_sets_holder_times_and_transitions() {
        let settings = LeaderElectionSettings::new("l", "ns", "me");
        let now = jiff::Timestamp::from_second(1_000).unwrap();
        let created = next_spec(&LeaseDecision::Create, None, &settings, now);
        assert_eq!(created.holder_identity.as_deref(), Some("me"));
        assert_eq!(created.lease_transitions, Some(0));
        assert_eq!(created.lease_duration_seconds, Some(15));
        assert_eq!(created.acquire_time, Some(MicroTime(now)));

        let old = LeaseSpec {
            lease_transitions: Some(4),
            acquire_time: Some(MicroTime(jiff::Timestamp::UNIX_EPOCH)),
            ..spec(Some("other"), Some(15))
        };
        let taken = next_spec(
            &LeaseDecision::Acquire { transition: true },
            Some(&old),
            &settings,
            now,
        );
        assert_eq!(taken.lease_transitions, Some(5));
        assert_eq!(taken.acquire_time, Some(MicroTime(now)));

        let mine = LeaseSpec {
            holder_identity: Some("me".into()),
            ..old.clone()
        };
        let renewed = next_spec(&LeaseDecision::Renew, Some(&mine), &settings, now);
        assert_eq!(renewed.lease_transitions, Some(4));
        assert_eq!(renewed.acquire_time, old.acquire_time);
        assert_eq!(renewed.renew_time, Some(MicroTime(now)));
    }

    #[test]
    fn validation() {
        let ok = LeaderElectionSettings::new("l", "ns", "me");
        let ms = Duration::from_millis;
        let cases = [
            ("defaults", ok.clone(), true),
            (
                "renew deadline equals lease",
                LeaderElectionSettings {
                    renew_deadline: ms(15_000),
                    ..ok.clone()
                },
                false,
            ),
            (
                "retry equals renew deadline",
                LeaderElectionSettings {
                    retry_period: ms(10_000),
                    ..ok.clone()
                },
                false,
            ),
            (
                "zero retry",
                LeaderElectionSettings {
                    retry_period: ms(0),
                    ..ok.clone()
                },
                false,
            ),
            (
                "empty identity",
                LeaderElectionSettings {
                    identity: String::new(),
                    ..ok.clone()
                },
                false,
            ),
            (
                "empty lease name",
                LeaderElectionSettings {
                    lease_name: String::new(),
                    ..ok.clone()
                },
                false,
            ),
        ];
        for (name, settings, valid) in cases {
            assert_eq!(settings.validate().is_ok(), valid, "{name}");
        }
    }

    #[test]
    fn sub_second_lease_duration_rounds_up() {
        let settings = LeaderElectionSettings {
            lease_duration: Duration::from_millis(2_500),
            ..LeaderElectionSettings::new("l", "ns", "me")
        };
        assert_eq!(settings.lease_duration_seconds(), 3);
    }
}
