//! Phases: a status enum with declared legal transitions, and dispatch to one handler per phase.
//!
//! An operator describes its lifecycle as an enum implementing [`Phase`]: each phase lists the
//! phases it may move to. Reconciling an object means running *the handler of its current phase*;
//! the handler decides the next phase, and [`dispatch`] checks that decision with [`transition`]
//! before the caller writes anything.
//!
//! The handlers are one `async fn` per phase, selected by an exhaustive `match` in
//! [`PhaseHandlers::handle`], so the compiler guarantees that every phase has a handler:
//!
//! ```
//! use std::{fmt, sync::Arc};
//! use kubernaut_framework::phase::{self, IllegalTransition, Phase, PhaseHandlers};
//!
//! #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
//! enum Job { Pending, Running, Done }
//! impl fmt::Display for Job {
//!     fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { fmt::Debug::fmt(self, f) }
//! }
//! impl Phase for Job {
//!     fn allowed_transitions(self) -> &'static [Self] {
//!         match self {
//!             Job::Pending => &[Job::Running],
//!             Job::Running => &[Job::Done],
//!             Job::Done => &[],
//!         }
//!     }
//!     fn is_terminal(self) -> bool { self == Job::Done }
//! }
//!
//! #[derive(Debug, thiserror::Error)]
//! enum Error { #[error(transparent)] Phase(#[from] IllegalTransition<Job>) }
//!
//! struct Handlers;
//! impl Handlers {
//!     async fn pending(&self, _job: Arc<String>) -> Result<Option<Job>, Error> { Ok(Some(Job::Running)) }
//!     async fn running(&self, _job: Arc<String>) -> Result<Option<Job>, Error> { Ok(None) }
//! }
//! impl PhaseHandlers<Job> for Handlers {
//!     type Object = String;
//!     type Output = Option<Job>; // the next phase; `None` = stay
//!     type Error = Error;
//!     async fn handle(&self, phase: Job, job: Arc<String>) -> Result<Option<Job>, Error> {
//!         match phase {
//!             Job::Pending => self.pending(job).await,
//!             Job::Running => self.running(job).await,
//!             Job::Done => Ok(None),
//!         }
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let next = phase::dispatch(&Handlers, Job::Pending, Arc::new("job".into())).await.unwrap();
//! assert_eq!(next, Some(Job::Running));
//! # });
//! ```
//!
//! # Guarantees
//!
//! 1. [`transition`] accepts `from → to` only if `to` is listed in `from.allowed_transitions()`,
//!    or `from == to` (staying in a phase is not a transition), or there is no phase yet and
//!    `to.is_initial()`.
//! 2. An illegal transition is logged (`warn`), counted in
//!    `framework_illegal_phase_transitions_total{from,to}` and returned as [`IllegalTransition`];
//!    [`dispatch`] returns it as the handler's error *instead of* the output, so a caller that
//!    writes status only from a successful dispatch never writes an illegal phase.
//! 3. A terminal phase accepts no transition other than staying, whatever `allowed_transitions`
//!    says.
//!
//! # Assumptions
//!
//! 1. Status is written by the caller, from the [`dispatch`] output, with the resourceVersion it
//!    read; this module performs no API calls.
//! 2. The metric is registered once per registry with [`register_metrics`] (the runtime does this
//!    for the operator's registry); counting works without registration, it is just not exported.
//!
//! # Caveats
//!
//! 1. The counter is process-global (one lifecycle enum per label pair), so two operators in one
//!    process with equally named phases share label values.
//! 2. The check is only as good as the declaration: a transition listed by mistake is allowed.

use std::fmt::{self, Debug, Display};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, LazyLock};

use prometheus::{IntCounterVec, Opts, Registry};

/// The `from` label value used when an object had no phase yet.
const NO_PHASE: &str = "none";

/// A lifecycle phase: usually a unit-variant enum stored in an object's `status.phase`.
pub trait Phase: Copy + Eq + Hash + Debug + Display + Send + Sync + 'static {
    /// The phases this phase may move to (excluding itself, which is always allowed).
    fn allowed_transitions(self) -> &'static [Self];

    /// Whether the phase is final: no transition leaves it.
    fn is_terminal(self) -> bool;

    /// Whether an object without a phase may enter this phase. Defaults to every phase; lifecycles
    /// with a single entry phase (for example `Pending`) should override it.
    fn is_initial(self) -> bool {
        true
    }
}

/// A refused phase change, returned by [`transition`] and [`dispatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub struct IllegalTransition<P: Phase> {
    /// The phase the object is in (`None`: no phase yet).
    pub from: Option<P>,
    /// The phase that was asked for.
    pub to: P,
}

impl<P: Phase> Display for IllegalTransition<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.from {
            Some(from) => write!(f, "illegal phase transition from {from} to {}", self.to),
            None => write!(f, "illegal initial phase {} (object had no phase)", self.to),
        }
    }
}

/// `framework_illegal_phase_transitions_total{from,to}`: the illegal transitions refused.
static ILLEGAL_TRANSITIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let opts = Opts::new(
        "framework_illegal_phase_transitions_total",
        "Phase transitions refused because the lifecycle does not allow them",
    );
    // The name and labels are constants, so this only fails on a programming error.
    #[allow(clippy::expect_used)]
    IntCounterVec::new(opts, &["from", "to"]).expect("valid metric definition")
});

/// The counter behind `framework_illegal_phase_transitions_total{from,to}`; the `from` label is
/// `none` when the object had no phase.
#[must_use]
pub fn illegal_transitions() -> &'static IntCounterVec {
    &ILLEGAL_TRANSITIONS
}

/// Register this module's metrics on `registry`. Registering on a registry that already has them
/// is not an error.
///
/// # Errors
///
/// Any other registration error from `prometheus` (for example a different metric with the same
/// name already registered).
pub fn register_metrics(registry: &Registry) -> Result<(), prometheus::Error> {
    match registry.register(Box::new(ILLEGAL_TRANSITIONS.clone())) {
        Ok(()) | Err(prometheus::Error::AlreadyReg) => Ok(()),
        Err(error) => Err(error),
    }
}

/// Check the move from `from` (`None`: the object has no phase yet) to `to`.
///
/// Returns `to` when the move is legal (see the module guarantees). Otherwise logs a warning,
/// increments `framework_illegal_phase_transitions_total{from,to}` and returns the refusal.
///
/// # Errors
///
/// [`IllegalTransition`] when the lifecycle does not allow the move.
pub fn transition<P: Phase>(from: Option<P>, to: P) -> Result<P, IllegalTransition<P>> {
    let legal = match from {
        None => to.is_initial(),
        Some(from) if from == to => true,
        Some(from) if from.is_terminal() => false,
        Some(from) => from.allowed_transitions().contains(&to),
    };
    if legal {
        return Ok(to);
    }
    let from_label = from.map_or_else(|| NO_PHASE.to_owned(), |p| p.to_string());
    let to_label = to.to_string();
    tracing::warn!(from = %from_label, to = %to_label, "illegal phase transition refused");
    ILLEGAL_TRANSITIONS
        .with_label_values(&[from_label.as_str(), to_label.as_str()])
        .inc();
    Err(IllegalTransition { from, to })
}

/// What a phase handler returns: anything that says which phase comes next.
///
/// Implemented for `Option<P>` (the next phase, `None` = stay) and `(Option<P>, T)` (the next
/// phase plus whatever the caller needs to write, e.g. a status patch and a requeue action).
/// An operator may implement it for its own status-update type.
pub trait Outcome<P: Phase> {
    /// The phase the handler wants to move to; `None` stays in the current phase.
    fn next_phase(&self) -> Option<P>;
}

impl<P: Phase> Outcome<P> for Option<P> {
    fn next_phase(&self) -> Option<P> {
        *self
    }
}

impl<P: Phase, T> Outcome<P> for (Option<P>, T) {
    fn next_phase(&self) -> Option<P> {
        self.0
    }
}

/// One async handler per phase, selected by an exhaustive `match` in [`PhaseHandlers::handle`].
///
/// Implement it on the operator's reconcile context (or a small struct borrowing it); see the
/// module example.
pub trait PhaseHandlers<P: Phase>: Send + Sync {
    /// The object being reconciled.
    type Object: Send + Sync;
    /// What a handler decided; carries the next phase.
    type Output: Outcome<P> + Send;
    /// The handlers' error; it must be able to carry a refused transition.
    type Error: From<IllegalTransition<P>> + Send;

    /// Run the handler of `phase` for `object`.
    fn handle(
        &self,
        phase: P,
        object: Arc<Self::Object>,
    ) -> impl Future<Output = Result<Self::Output, Self::Error>> + Send;
}

/// Run the handler for `current` and check the phase it chose with [`transition`].
///
/// # Errors
///
/// The handler's error, or `H::Error::from(IllegalTransition)` when the handler chose a phase
/// `current` may not move to (the output is then discarded, so it cannot be written).
pub async fn dispatch<P, H>(
    handlers: &H,
    current: P,
    object: Arc<H::Object>,
) -> Result<H::Output, H::Error>
where
    P: Phase,
    H: PhaseHandlers<P>,
{
    let output = handlers.handle(current, object).await?;
    if let Some(next) = output.next_phase() {
        transition(Some(current), next)?;
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A lifecycle shaped like the `WorkflowExecution` one; unique to this test module so the
    /// global counter's label values are not shared with other tests.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    enum Wfe {
        Pending,
        Running,
        Completed,
        Failed,
        Skipped,
    }

    impl Display for Wfe {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "Test{self:?}")
        }
    }

    impl Phase for Wfe {
        fn allowed_transitions(self) -> &'static [Self] {
            match self {
                Wfe::Pending => &[Wfe::Running, Wfe::Failed, Wfe::Skipped],
                Wfe::Running => &[Wfe::Completed, Wfe::Failed],
                Wfe::Completed | Wfe::Failed | Wfe::Skipped => &[],
            }
        }
        fn is_terminal(self) -> bool {
            matches!(self, Wfe::Completed | Wfe::Failed | Wfe::Skipped)
        }
        fn is_initial(self) -> bool {
            self == Wfe::Pending
        }
    }

    /// A lifecycle whose terminal phase wrongly lists a way out, to check guarantee 3.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    enum Leaky {
        Open,
        Closed,
    }

    impl Display for Leaky {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "Leaky{self:?}")
        }
    }

    impl Phase for Leaky {
        fn allowed_transitions(self) -> &'static [Self] {
            match self {
                Leaky::Open => &[Leaky::Closed],
                Leaky::Closed => &[Leaky::Open],
            }
        }
        fn is_terminal(self) -> bool {
            self == Leaky::Closed
        }
    }

    fn count(from: &str, to: &str) -> u64 {
        illegal_transitions().with_label_values(&[from, to]).get()
    }

    #[test]
    fn transitions_follow_the_declaration() {
        use Wfe::*;
        let cases = [
            (None, Pending, true),
            (None, Running, false),
            (None, Skipped, false),
            (Some(Pending), Pending, true),
            (Some(Pending), Running, true),
            (Some(Pending), Failed, true),
            (Some(Pending), Skipped, true),
            (Some(Pending), Completed, false),
            (Some(Running), Running, true),
            (Some(Running), Completed, true),
            (Some(Running), Failed, true),
            (Some(Running), Pending, false),
            (Some(Running), Skipped, false),
            (Some(Completed), Completed, true),
            (Some(Completed), Running, false),
            (Some(Failed), Pending, false),
            (Some(Skipped), Running, false),
        ];
        for (from, to, legal) in cases {
            let result = transition(from, to);
            assert_eq!(result.is_ok(), legal, "{from:?} -> {to:?}");
            match result {
                Ok(phase) => assert_eq!(phase, to),
                Err(error) => assert_eq!(error, IllegalTransition { from, to }),
            }
        }
    }

    #[test]
    fn default_is_initial_admits_every_phase() {
        assert!(transition(None, Leaky::Open).is_ok());
        assert!(transition(None, Leaky::Closed).is_ok());
    }

    #[test]
    fn terminal_phase_has_no_way_out_even_if_declared() {
        assert!(transition(Some(Leaky::Open), Leaky::Closed).is_ok());
        let before = count("LeakyClosed", "LeakyOpen");
        assert!(transition(Some(Leaky::Closed), Leaky::Open).is_err());
        assert_eq!(count("LeakyClosed", "LeakyOpen"), before + 1);
        assert!(transition(Some(Leaky::Closed), Leaky::Closed).is_ok());
    }

    #[test]
    fn illegal_transitions_are_counted_by_from_and_to() {
        let before_running = count("TestRunning", "TestPending");
        let before_none = count("none", "TestCompleted");
        let legal_before = count("TestPending", "TestRunning");
        let _ = transition(Some(Wfe::Running), Wfe::Pending);
        let _ = transition(Some(Wfe::Running), Wfe::Pending);
        let _ = transition(None, Wfe::Completed);
        let _ = transition(Some(Wfe::Pending), Wfe::Running);
        assert_eq!(count("TestRunning", "TestPending"), before_running + 2);
        assert_eq!(count("none", "TestCompleted"), before_none + 1);
        assert_eq!(
            count("TestPending", "TestRunning"),
            legal_before,
            "legal ones are not counted"
        );
    }

    #[test]
    fn illegal_transition_messages_name_both_phases() {
        let cases = [
            (
                IllegalTransition {
                    from: Some(Wfe::Completed),
                    to: Wfe::Running,
                },
                "illegal phase transition from TestCompleted to TestRunning",
            ),
            (
                IllegalTransition {
                    from: None,
                    to: Wfe::Failed,
                },
                "illegal initial phase TestFailed (object had no phase)",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.to_string(), expected);
        }
    }

    #[test]
    fn metrics_register_once_and_are_exported() {
        let registry = Registry::new();
        register_metrics(&registry).unwrap();
        register_metrics(&registry).unwrap();
        let _ = transition(Some(Wfe::Skipped), Wfe::Failed);
        let families = registry.gather();
        let family = families
            .iter()
            .find(|f| f.name() == "framework_illegal_phase_transitions_total")
            .expect("metric exported");
        assert!(family.get_metric().iter().any(|m| {
            let labels: Vec<_> = m
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            labels.contains(&("from", "TestSkipped")) && labels.contains(&("to", "TestFailed"))
        }));
    }

    #[derive(Debug, thiserror::Error)]
    enum TestError {
        #[error(transparent)]
        Illegal(#[from] IllegalTransition<Wfe>),
        #[error("handler failed: {0}")]
        Handler(String),
    }

    /// A scripted handler decision.
    type Script = fn(Wfe) -> Result<Option<Wfe>, TestError>;

    /// Records which handler ran and returns a scripted next phase for each.
    struct Recorder {
        calls: Mutex<Vec<Wfe>>,
        next: Script,
    }

    impl Recorder {
        async fn pending(
            &self,
            _obj: Arc<String>,
        ) -> Result<(Option<Wfe>, &'static str), TestError> {
            self.record(Wfe::Pending).map(|n| (n, "pending-handler"))
        }
        async fn running(
            &self,
            _obj: Arc<String>,
        ) -> Result<(Option<Wfe>, &'static str), TestError> {
            self.record(Wfe::Running).map(|n| (n, "running-handler"))
        }
        async fn terminal(
            &self,
            phase: Wfe,
            _obj: Arc<String>,
        ) -> Result<(Option<Wfe>, &'static str), TestError> {
            self.record(phase).map(|n| (n, "terminal-handler"))
        }
        fn record(&self, phase: Wfe) -> Result<Option<Wfe>, TestError> {
            self.calls.lock().unwrap().push(phase);
            (self.next)(phase)
        }
    }

    impl PhaseHandlers<Wfe> for Recorder {
        type Object = String;
        type Output = (Option<Wfe>, &'static str);
        type Error = TestError;

        async fn handle(&self, phase: Wfe, object: Arc<String>) -> Result<Self::Output, TestError> {
            match phase {
                Wfe::Pending => self.pending(object).await,
                Wfe::Running => self.running(object).await,
                Wfe::Completed | Wfe::Failed | Wfe::Skipped => self.terminal(phase, object).await,
            }
        }
    }

    #[tokio::test]
    async fn dispatch_runs_the_current_phase_handler_and_checks_its_choice() {
        let cases: [(Wfe, Script, Result<&str, &str>); 6] = [
            (
                Wfe::Pending,
                |_| Ok(Some(Wfe::Running)),
                Ok("pending-handler"),
            ),
            (Wfe::Pending, |_| Ok(None), Ok("pending-handler")),
            (
                Wfe::Running,
                |_| Ok(Some(Wfe::Completed)),
                Ok("running-handler"),
            ),
            (Wfe::Completed, |_| Ok(None), Ok("terminal-handler")),
            (
                Wfe::Running,
                |_| Ok(Some(Wfe::Pending)),
                Err("illegal phase transition from TestRunning to TestPending"),
            ),
            (
                Wfe::Pending,
                |_| Err(TestError::Handler("boom".into())),
                Err("handler failed: boom"),
            ),
        ];
        for (current, next, expected) in cases {
            let handlers = Recorder {
                calls: Mutex::new(Vec::new()),
                next,
            };
            let result = dispatch(&handlers, current, Arc::new("obj".into())).await;
            assert_eq!(
                *handlers.calls.lock().unwrap(),
                vec![current],
                "exactly one handler ran"
            );
            match (result, expected) {
                (Ok((_, marker)), Ok(want)) => assert_eq!(marker, want, "{current:?}"),
                (Err(error), Err(want)) => assert_eq!(error.to_string(), want, "{current:?}"),
                (other, want) => panic!("{current:?}: got {other:?}, want {want:?}"),
            }
        }
    }

    #[tokio::test]
    async fn dispatch_counts_a_refused_choice() {
        let handlers = Recorder {
            calls: Mutex::new(Vec::new()),
            next: |_| Ok(Some(Wfe::Running)),
        };
        let before = count("TestFailed", "TestRunning");
        let result = dispatch(&handlers, Wfe::Failed, Arc::new("obj".into())).await;
        assert!(matches!(result, Err(TestError::Illegal(_))), "{result:?}");
        assert_eq!(count("TestFailed", "TestRunning"), before + 1);
    }
}
