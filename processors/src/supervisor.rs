//! One shape for every background processor, and one supervised run loop for all of them.
//!
//! A processor is a [`Processor`]: a `step` that does the next piece of work and says when the
//! next one is due ([`Next`]), and a `wait_for_events` that sleeps until the log moves. The
//! [`Supervisor`] runs each processor in its own task: an error is logged, counted and retried
//! with exponential backoff; a panic is caught, recorded, and the processor is built again from
//! its factory, so one failing processor never stops the others. [`Registry`] holds what
//! `GET /ocart/v1/info` and the metrics show: each processor's state, steps, errors, restarts
//! and last error.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use ocart_projections::EventLog;

/// How long a processor that watches a table (not the log) sleeps at most between steps,
/// unless it is told otherwise (`processors.poll_interval_ms`).
pub const DEFAULT_POLL: Duration = Duration::from_millis(500);

/// How long a step in flight may go on after the server is told to stop.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// The first wait after a failure; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two failing steps.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long until a processor's next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// There is more to do: step again at once.
    Now,
    /// Step again after this long (the next timer, a poll interval).
    After(Duration),
    /// Nothing to do until the log moves: [`Processor::wait_for_events`].
    NewEvents,
}

/// A background processor: a step function plus how it waits.
#[async_trait]
pub trait Processor: Send + Sync {
    /// The name `/ocart/v1/info`, the logs and the metrics use.
    fn name(&self) -> &'static str;

    /// Does the next piece of work and answers when the next step is due.
    async fn step(&self) -> anyhow::Result<Next>;

    /// Waits until new events may be readable (a [`LogWaker`]), or `stop` changes. The
    /// default, for processors that never answer [`Next::NewEvents`], sleeps a second.
    async fn wait_for_events(&self, stop: &mut watch::Receiver<bool>) {
        sleep_or_stop(Duration::from_secs(1), stop).await;
    }

    /// Whether, when the server stops, this processor first finishes what the log holds (steps
    /// until it answers [`Next::NewEvents`], within [`STOP_GRACE`]): the projections do, so a
    /// graceful stop leaves the read tables up to date with every acknowledged write.
    fn drains_on_stop(&self) -> bool {
        false
    }
}

/// Steps `processor` until it has nothing left in the log (or fails), within [`STOP_GRACE`].
async fn drain(name: &'static str, processor: &dyn Processor) {
    let steps = async {
        loop {
            match processor.step().await {
                Ok(Next::NewEvents) => return Ok(()),
                // More to do, or readable shortly: go on without the pause a running server
                // takes to coalesce work.
                Ok(Next::Now) => {}
                Ok(Next::After(pause)) => {
                    tokio::time::sleep(pause.min(Duration::from_millis(10))).await
                }
                Err(err) => return Err(err),
            }
        }
    };
    match tokio::time::timeout(STOP_GRACE, AssertUnwindSafe(steps).catch_unwind()).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => {
            tracing::warn!(processor = name, error = %format!("{err:#}"), "could not finish the log before stopping; the next start goes on from the checkpoint")
        }
        Ok(Err(panic)) => {
            tracing::error!(processor = name, panic = %panic_message(panic.as_ref()), "panicked while finishing the log before stopping")
        }
        Err(_) => {
            tracing::warn!(processor = name, grace = ?STOP_GRACE, "stopped before finishing the log; the next start goes on from the checkpoint")
        }
    }
}

/// Wakes a processor when the log moves (or every `poll`, for writers in other processes).
pub struct LogWaker {
    log: EventLog,
    seen: tokio::sync::Mutex<watch::Receiver<i64>>,
    poll: Duration,
}

impl LogWaker {
    pub fn new(log: &EventLog, poll: Duration) -> Self {
        Self {
            log: log.clone(),
            seen: tokio::sync::Mutex::new(log.watch()),
            poll,
        }
    }

    pub fn poll(&self) -> Duration {
        self.poll
    }

    /// Waits for new events, at most the poll interval.
    pub async fn changed(&self) {
        let mut seen = self.seen.lock().await;
        self.log.wait_for_new(&mut seen, self.poll).await;
    }

    /// For a processor that reads the log only as far as the projections have applied it:
    /// wakes on new events and then waits a moment more, while the projections apply them;
    /// looks again after 100 ms at most (or the poll interval, if shorter) in any case.
    pub async fn wait_behind_projections(&self, stop: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = self.changed() => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ = tokio::time::sleep(Duration::from_millis(100).min(self.poll)) => {}
            _ = stop.changed() => {}
        }
    }

    /// For a follow-up that may lag a moment (it reacts to a few event types among many):
    /// wakes on new events, then lets `gather` pass so the next read takes a batch rather than
    /// a handful — each read of the log costs the writers on a busy store.
    pub async fn wait_and_gather(&self, gather: Duration, stop: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = async {
                self.changed().await;
                tokio::time::sleep(gather).await;
            } => {}
            _ = stop.changed() => {}
        }
    }

    /// Waits for new events, at most the poll interval; returns early when `stop` changes.
    pub async fn wait(&self, stop: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = self.changed() => {}
            _ = stop.changed() => {}
        }
    }
}

/// Sleeps `pause` unless `stop` changes first.
pub async fn sleep_or_stop(pause: Duration, stop: &mut watch::Receiver<bool>) {
    if pause.is_zero() {
        return;
    }
    tokio::select! {
        _ = tokio::time::sleep(pause) => {}
        _ = stop.changed() => {}
    }
}

/// Builds a processor (again, after a panic). Building may fail (NATS unreachable, say): the
/// supervisor retries with backoff.
pub type Factory = Box<
    dyn Fn() -> Pin<Box<dyn Future<Output = anyhow::Result<Box<dyn Processor>>> + Send>>
        + Send
        + Sync,
>;

/// Makes a [`Factory`] from an async closure.
pub fn factory<F, Fut, P>(build: F) -> Factory
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<P>> + Send + 'static,
    P: Processor + 'static,
{
    Box::new(move || {
        let built = build();
        Box::pin(async move { built.await.map(|p| Box::new(p) as Box<dyn Processor>) })
    })
}

/// What a processor is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessorState {
    /// Being built (at start, or again after a panic).
    Starting,
    /// Stepping normally.
    Running,
    /// Its last step failed; it waits and tries again.
    BackingOff,
    /// Stopped with the server (or the lease).
    Stopped,
}

impl ProcessorState {
    /// The wire name (as serialised).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::BackingOff => "backing_off",
            Self::Stopped => "stopped",
        }
    }
}

/// One processor's record, as `/ocart/v1/info` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessorStatus {
    pub name: String,
    pub state: ProcessorState,
    /// Steps that succeeded.
    pub steps: u64,
    /// Steps that failed with an error.
    pub errors: u64,
    /// Panics caught; each one rebuilt the processor.
    pub panics: u64,
    /// Times the processor was built again after a panic or a failed build.
    pub restarts: u64,
    /// Failures in a row (0 while healthy).
    pub consecutive_failures: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub last_step_at: Option<DateTime<Utc>>,
}

impl ProcessorStatus {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            state: ProcessorState::Starting,
            steps: 0,
            errors: 0,
            panics: 0,
            restarts: 0,
            consecutive_failures: 0,
            last_error: None,
            last_error_at: None,
            last_step_at: None,
        }
    }
}

/// The states of this instance's processors (empty while another instance holds the lease).
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<BTreeMap<String, ProcessorStatus>>,
}

impl Registry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Every processor's record, by name.
    pub fn snapshot(&self) -> Vec<ProcessorStatus> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ProcessorStatus>> {
        // A panic while holding this lock cannot leave a record half-written (each update is
        // a few field stores), so a poisoned lock is still good to read.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes `name`'s record. The failures gauge is touched only when its value changes (or
    /// the record is new): a healthy processor's steps cost no metrics work.
    fn update(&self, name: &'static str, change: impl FnOnce(&mut ProcessorStatus)) {
        let mut map = self.lock();
        let before = match map.get(name) {
            Some(status) => Some(status.consecutive_failures),
            None => {
                map.insert(name.to_owned(), ProcessorStatus::new(name));
                None
            }
        };
        let Some(status) = map.get_mut(name) else {
            return;
        };
        change(status);
        if before != Some(status.consecutive_failures) {
            metrics::gauge!("ocart_processor_consecutive_failures", "processor" => name)
                .set(status.consecutive_failures as f64);
        }
    }

    fn failed(&self, name: &'static str, error: String, panicked: bool) {
        self.update(name, |s| {
            s.state = ProcessorState::BackingOff;
            if panicked {
                s.panics += 1;
            } else {
                s.errors += 1;
            }
            s.consecutive_failures += 1;
            s.last_error = Some(error);
            s.last_error_at = Some(Utc::now());
        });
    }
}

/// Runs processors, each in its own supervised task, until `stop` turns true.
pub struct Supervisor {
    registry: Arc<Registry>,
    tasks: JoinSet<()>,
    stop: watch::Receiver<bool>,
}

impl Supervisor {
    pub fn new(registry: Arc<Registry>, stop: watch::Receiver<bool>) -> Self {
        Self {
            registry,
            tasks: JoinSet::new(),
            stop,
        }
    }

    /// Starts `name`, built by `build`, under supervision.
    pub fn spawn(&mut self, name: &'static str, build: Factory) {
        self.registry.update(name, |_| {});
        let registry = self.registry.clone();
        let stop = self.stop.clone();
        self.tasks.spawn(supervise(name, build, registry, stop));
    }

    /// Waits until every processor has stopped (after `stop` turned true).
    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Runs one processor without a registry of its own (benches, tools): the same loop.
pub async fn run(processor: impl Processor + 'static, stop: watch::Receiver<bool>) {
    let name = processor.name();
    let cell = Arc::new(Mutex::new(Some(processor)));
    let build = factory(move || {
        let taken = cell.lock().unwrap_or_else(|p| p.into_inner()).take();
        async move { taken.ok_or_else(|| anyhow::anyhow!("{name} panicked and cannot be rebuilt")) }
    });
    supervise(name, build, Registry::new(), stop).await;
}

async fn supervise(
    name: &'static str,
    build: Factory,
    registry: Arc<Registry>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = FIRST_BACKOFF;
    let mut built_once = false;
    while !*stop.borrow() {
        if built_once {
            registry.update(name, |s| s.restarts += 1);
        }
        built_once = true;
        registry.update(name, |s| s.state = ProcessorState::Starting);
        let processor = match AssertUnwindSafe(build()).catch_unwind().await {
            Ok(Ok(p)) => p,
            Ok(Err(err)) => {
                tracing::warn!(processor = name, error = %format!("{err:#}"), retry_in = ?backoff, "cannot start the processor; retrying");
                registry.failed(name, format!("{err:#}"), false);
                sleep_or_stop(backoff, &mut stop).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                tracing::error!(processor = name, panic = %message, "the processor panicked while starting; restarting");
                registry.failed(name, format!("panicked: {message}"), true);
                sleep_or_stop(backoff, &mut stop).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        registry.update(name, |s| s.state = ProcessorState::Running);
        loop {
            if *stop.borrow() {
                break;
            }
            // A step in flight when the server stops may finish (a graceful stop projects
            // what was just written); one still running after the grace period is dropped,
            // which every step tolerates: its effects are committed with its checkpoint.
            let mut stopping = stop.clone();
            let step = tokio::select! {
                step = AssertUnwindSafe(processor.step()).catch_unwind() => step,
                _ = async {
                    let _ = stopping.wait_for(|stopped| *stopped).await;
                    tokio::time::sleep(STOP_GRACE).await;
                } => break,
            };
            match step {
                Ok(Ok(next)) => {
                    backoff = FIRST_BACKOFF;
                    registry.update(name, |s| {
                        s.state = ProcessorState::Running;
                        s.steps += 1;
                        s.consecutive_failures = 0;
                        s.last_step_at = Some(Utc::now());
                    });
                    match next {
                        Next::Now => {}
                        Next::After(pause) => sleep_or_stop(pause, &mut stop).await,
                        Next::NewEvents => processor.wait_for_events(&mut stop).await,
                    }
                }
                Ok(Err(err)) => {
                    metrics::counter!("ocart_processor_errors_total", "processor" => name)
                        .increment(1);
                    tracing::warn!(processor = name, error = %format!("{err:#}"), retry_in = ?backoff, "processor step failed; retrying");
                    registry.failed(name, format!("{err:#}"), false);
                    sleep_or_stop(backoff, &mut stop).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(panic) => {
                    metrics::counter!("ocart_processor_panics_total", "processor" => name)
                        .increment(1);
                    let message = panic_message(panic.as_ref());
                    tracing::error!(processor = name, panic = %message, retry_in = ?backoff, "processor panicked; restarting it");
                    registry.failed(name, format!("panicked: {message}"), true);
                    sleep_or_stop(backoff, &mut stop).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    break;
                }
            }
        }
        if *stop.borrow() && processor.drains_on_stop() {
            drain(name, processor.as_ref()).await;
        }
    }
    registry.update(name, |s| s.state = ProcessorState::Stopped);
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Fails, then panics, then works: a processor that misbehaves the ways the supervisor
    /// must survive. `built` counts how often the factory built it.
    struct Flaky {
        steps: Arc<AtomicU64>,
    }

    #[async_trait]
    impl Processor for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        async fn step(&self) -> anyhow::Result<Next> {
            match self.steps.fetch_add(1, Ordering::SeqCst) {
                0 => anyhow::bail!("the database went away"),
                1 => panic!("poison"),
                _ => Ok(Next::After(Duration::from_millis(1))),
            }
        }
    }

    struct Steady;

    #[async_trait]
    impl Processor for Steady {
        fn name(&self) -> &'static str {
            "steady"
        }
        async fn step(&self) -> anyhow::Result<Next> {
            Ok(Next::After(Duration::from_millis(1)))
        }
    }

    async fn until(registry: &Registry, done: impl Fn(&[ProcessorStatus]) -> bool) {
        for _ in 0..500 {
            if done(&registry.snapshot()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not reached: {:?}", registry.snapshot());
    }

    #[tokio::test]
    async fn an_error_backs_off_a_panic_rebuilds_and_neither_stops_the_others() {
        let registry = Registry::new();
        let (stop_tx, stop) = watch::channel(false);
        let mut supervisor = Supervisor::new(registry.clone(), stop);
        let steps = Arc::new(AtomicU64::new(0));
        let built = Arc::new(AtomicU64::new(0));
        let (s, b) = (steps.clone(), built.clone());
        supervisor.spawn(
            "flaky",
            factory(move || {
                b.fetch_add(1, Ordering::SeqCst);
                let steps = s.clone();
                async move { Ok(Flaky { steps }) }
            }),
        );
        supervisor.spawn("steady", factory(|| async { Ok(Steady) }));
        until(&registry, |all| {
            all.iter().any(|p| p.name == "flaky" && p.steps >= 3)
                && all.iter().any(|p| p.name == "steady" && p.steps >= 3)
        })
        .await;
        let flaky = registry
            .snapshot()
            .into_iter()
            .find(|p| p.name == "flaky")
            .unwrap();
        assert_eq!(flaky.errors, 1, "{flaky:?}");
        assert_eq!(flaky.panics, 1, "{flaky:?}");
        assert_eq!(
            flaky.restarts, 1,
            "rebuilt once, after the panic: {flaky:?}"
        );
        assert_eq!(built.load(Ordering::SeqCst), 2);
        assert_eq!(flaky.consecutive_failures, 0, "healthy again: {flaky:?}");
        assert_eq!(flaky.state, ProcessorState::Running);
        assert_eq!(flaky.last_error.as_deref(), Some("panicked: poison"));
        let steady = registry
            .snapshot()
            .into_iter()
            .find(|p| p.name == "steady")
            .unwrap();
        assert_eq!(steady.errors + steady.panics + steady.restarts, 0);
        stop_tx.send(true).unwrap();
        supervisor.join().await;
        assert!(registry
            .snapshot()
            .iter()
            .all(|p| p.state == ProcessorState::Stopped));
    }

    /// Has `left` events to handle, one per step, each step answering a long pause as the
    /// projections do after a small batch.
    struct Backlog {
        left: Arc<AtomicU64>,
        drains: bool,
    }

    #[async_trait]
    impl Processor for Backlog {
        fn name(&self) -> &'static str {
            "backlog"
        }
        async fn step(&self) -> anyhow::Result<Next> {
            if self.left.load(Ordering::SeqCst) == 0 {
                return Ok(Next::NewEvents);
            }
            self.left.fetch_sub(1, Ordering::SeqCst);
            Ok(Next::After(Duration::from_secs(3600)))
        }
        fn drains_on_stop(&self) -> bool {
            self.drains
        }
    }

    #[tokio::test]
    async fn a_stop_lets_a_draining_processor_finish_the_log_and_no_other() {
        for drains in [true, false] {
            let registry = Registry::new();
            let (stop_tx, stop) = watch::channel(false);
            let mut supervisor = Supervisor::new(registry.clone(), stop);
            let left = Arc::new(AtomicU64::new(5));
            let l = left.clone();
            supervisor.spawn(
                "backlog",
                factory(move || {
                    let left = l.clone();
                    async move { Ok(Backlog { left, drains }) }
                }),
            );
            until(&registry, |all| all.iter().any(|p| p.steps >= 1)).await;
            stop_tx.send(true).unwrap();
            supervisor.join().await;
            let expected = if drains { 0 } else { 4 };
            assert_eq!(left.load(Ordering::SeqCst), expected, "drains: {drains}");
        }
    }

    /// Records every set of a gauge, by its `processor` label.
    #[derive(Default)]
    struct Gauges(Arc<Mutex<Vec<(String, f64)>>>);

    struct Setter(String, Arc<Mutex<Vec<(String, f64)>>>);

    impl metrics::GaugeFn for Setter {
        fn increment(&self, _: f64) {}
        fn decrement(&self, _: f64) {}
        fn set(&self, value: f64) {
            self.1.lock().unwrap().push((self.0.clone(), value));
        }
    }

    impl metrics::Recorder for Gauges {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            metrics::Counter::noop()
        }
        fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            let label = key
                .labels()
                .find(|l| l.key() == "processor")
                .map(|l| l.value().to_owned())
                .unwrap_or_default();
            metrics::Gauge::from_arc(Arc::new(Setter(label, self.0.clone())))
        }
        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    #[test]
    fn the_failures_gauge_is_set_only_when_it_changes() {
        let gauges = Gauges::default();
        let sets = gauges.0.clone();
        let registry = Registry::default();
        metrics::with_local_recorder(&gauges, || {
            let ok = |s: &mut ProcessorStatus| {
                s.steps += 1;
                s.consecutive_failures = 0;
            };
            // New: the gauge starts at 0.
            registry.update("a", |_| {});
            for _ in 0..100 {
                registry.update("a", ok);
            }
            registry.failed("a", "down".into(), false);
            registry.failed("a", "down".into(), false);
            registry.update("b", ok);
            for _ in 0..100 {
                registry.update("a", ok);
            }
        });
        let sets = sets.lock().unwrap().clone();
        let of = |name: &str| -> Vec<f64> {
            sets.iter()
                .filter(|(label, _)| label == name)
                .map(|(_, v)| *v)
                .collect()
        };
        assert_eq!(of("a"), vec![0.0, 1.0, 2.0, 0.0], "{sets:?}");
        assert_eq!(of("b"), vec![0.0], "{sets:?}");
        assert_eq!(registry.snapshot()[0].steps, 200);
    }

    #[tokio::test]
    async fn a_factory_that_fails_is_retried_with_backoff() {
        let registry = Registry::new();
        let (stop_tx, stop) = watch::channel(false);
        let mut supervisor = Supervisor::new(registry.clone(), stop);
        let tries = Arc::new(AtomicU64::new(0));
        let t = tries.clone();
        supervisor.spawn(
            "steady",
            factory(move || {
                let attempt = t.fetch_add(1, Ordering::SeqCst);
                async move {
                    if attempt < 2 {
                        anyhow::bail!("NATS is not reachable")
                    }
                    Ok(Steady)
                }
            }),
        );
        until(&registry, |all| all[0].steps >= 1).await;
        let status = registry.snapshot().remove(0);
        assert_eq!(status.errors, 2, "{status:?}");
        assert_eq!(status.restarts, 2, "{status:?}");
        assert_eq!(status.last_error.as_deref(), Some("NATS is not reachable"));
        stop_tx.send(true).unwrap();
        supervisor.join().await;
    }
}
