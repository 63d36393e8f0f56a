//! The served-version table and the loop that keeps it in line with the configuration and the
//! file system.
//!
//! Every change goes through [`ModelManager::reconcile`], one model at a time under one async
//! lock: scan the base path, choose the aspired versions, load the new ones (warmup included)
//! and only then unload the ones no longer aspired (TF Serving's availability-preserving policy).
//! Requests never take that lock: they read an immutable [`Snapshot`] published with `arc-swap`
//! and hold an `Arc<ServedVersion>`, which is released off the async runtime after its last
//! request.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use aegis_batch::{Executor, ExecutorConfig};
use aegis_core::{Error, Result};
use aegis_runtime::RuntimeRegistry;
use arc_swap::ArcSwap;
use tokio::task::JoinHandle;

use crate::discover::{no_versions, scan_versions, select_versions, Fingerprint, FoundVersion};
use crate::{ModelConfig, ServedVersion, VersionPolicy};

mod repository;

pub use repository::{IndexEntry, RepositoryState};

/// How a request names the version it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSelector {
    /// The highest available version.
    Latest,
    Specific(i64),
    Label(String),
}

/// TF Serving's `ModelVersionStatus.State`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionState {
    Start,
    Loading,
    Available,
    Unloading,
    End,
}

impl VersionState {
    pub fn name(self) -> &'static str {
        match self {
            VersionState::Start => "START",
            VersionState::Loading => "LOADING",
            VersionState::Available => "AVAILABLE",
            VersionState::Unloading => "UNLOADING",
            VersionState::End => "END",
        }
    }
    /// The proto enum number.
    pub fn code(self) -> i32 {
        match self {
            VersionState::Start => 10,
            VersionState::Loading => 20,
            VersionState::Available => 30,
            VersionState::Unloading => 40,
            VersionState::End => 50,
        }
    }
}

/// The state of one version, with the load error if it failed.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionStatus {
    pub version: i64,
    pub state: VersionState,
    pub error: Option<Error>,
}

/// Runs a loaded version's warmup requests before it is marked available.
pub trait Warmup: Send + Sync {
    /// Replays the version's warmup records; returns how many ran. An error fails the load.
    fn warmup<'a>(
        &'a self,
        version: &'a ServedVersion,
    ) -> Pin<Box<dyn Future<Output = Result<usize>> + Send + 'a>>;
}

/// Told of each version load, for metrics kept outside this crate. Called once per attempt, off
/// the request path.
pub trait LoadObserver: Send + Sync {
    /// The hooks the executor of a version being loaded reports to (`None`: no hooks).
    fn executor(&self, model: &str, version: i64, platform: &str) -> aegis_batch::Observer;
    /// A load attempt of `path` ended after `took` (warmup included), with `error` if it failed.
    fn loaded(
        &self,
        model: &str,
        version: i64,
        path: &std::path::Path,
        took: Duration,
        error: Option<&Error>,
    );
    /// `version` has been released (its last request ended and its session closed): what was
    /// kept per version can go, so that a server rolling out version after version keeps a
    /// bounded set of series.
    fn unloaded(&self, _model: &str, _version: i64) {}
}

/// How the manager loads and retires versions.
#[derive(Clone)]
pub struct ManagerOptions {
    pub executor: ExecutorConfig,
    /// TF Serving's `--allow_version_labels_for_unavailable_models`.
    pub allow_labels_for_unavailable: bool,
    /// A version directory is loaded only once nothing in it has changed for this long.
    pub settle: Duration,
    /// Further attempts at a version that failed to load while its files stay the same (TF
    /// Serving's `--max_num_load_retries`); a change to the files always earns a new attempt.
    pub max_load_retries: u32,
    /// Time between those attempts (`--load_retry_interval_micros`).
    pub load_retry_interval: Duration,
    pub warmup: Option<Arc<dyn Warmup>>,
    /// TF Serving's `--enable_per_model_batching_parameters`: a version batches with the
    /// `batching_params.pbtxt` in its directory, and without one it does not batch.
    pub per_model_batching: bool,
    /// Load and executor hooks (metrics); none by default.
    pub observer: Option<Arc<dyn LoadObserver>>,
    /// Requests of one model (all versions) queued or running at a time; one more is refused
    /// at once with RESOURCE_EXHAUSTED. `None`: only the per-version queue bounds them.
    pub max_inflight_per_model: Option<std::num::NonZeroUsize>,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        ManagerOptions {
            executor: ExecutorConfig::default(),
            allow_labels_for_unavailable: false,
            settle: Duration::from_secs(1),
            max_load_retries: 5,
            load_retry_interval: Duration::from_secs(60),
            warmup: None,
            per_model_batching: false,
            observer: None,
            max_inflight_per_model: None,
        }
    }
}

/// What requests see: every model's available versions and labels. Immutable once published.
#[derive(Default)]
struct Snapshot {
    models: HashMap<String, ModelEntry>,
}

/// How many ended versions whose directory is gone a model's status keeps listing.
const ENDED_KEPT: usize = 10;

#[derive(Default, Clone)]
struct ModelEntry {
    versions: BTreeMap<i64, Arc<ServedVersion>>,
    labels: BTreeMap<String, i64>,
}

/// The manager's own record of a model: its config and every version it has seen.
struct ModelRecord {
    config: ModelConfig,
    versions: BTreeMap<i64, VersionRecord>,
    /// Unloaded through the repository API: serves nothing until loaded again, whatever the
    /// file system or a re-applied config says (see [`repository`]).
    unloaded: bool,
}

struct VersionRecord {
    state: VersionState,
    error: Option<Error>,
    served: Option<Arc<ServedVersion>>,
    /// The files of the last failed load and how many times they failed.
    failed: Option<(Fingerprint, u32, Instant)>,
}

impl VersionRecord {
    fn new(state: VersionState) -> Self {
        VersionRecord {
            state,
            error: None,
            served: None,
            failed: None,
        }
    }
}

/// One model in the listing of [`ModelManager::models`].
#[derive(Debug, Clone)]
pub struct ModelSummary {
    pub name: String,
    pub base_path: PathBuf,
    pub versions: Vec<VersionStatus>,
    pub labels: BTreeMap<String, i64>,
}

/// Owns every loaded model version and answers "which instance serves this request".
pub struct ModelManager {
    registry: RuntimeRegistry,
    options: ManagerOptions,
    snapshot: ArcSwap<Snapshot>,
    /// Shared with the background tasks that finish unloads.
    records: Arc<Mutex<BTreeMap<String, ModelRecord>>>,
    /// Serializes reconciliation (loads happen under it); requests never take it.
    reconcile_lock: tokio::sync::Mutex<()>,
    /// Set once the initial load has finished; readiness stays false before.
    started: std::sync::atomic::AtomicBool,
    /// Set when shutdown begins: readiness turns false and nothing loads any more.
    stopping: std::sync::atomic::AtomicBool,
    limits: crate::limits::InflightLimits,
    /// Bumped whenever readiness may have changed (see [`ModelManager::readiness_changes`]).
    changes: tokio::sync::watch::Sender<()>,
}

impl ModelManager {
    pub fn new(registry: RuntimeRegistry, options: ManagerOptions) -> Self {
        ModelManager {
            registry,
            options: options.clone(),
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            records: Arc::new(Mutex::new(BTreeMap::new())),
            reconcile_lock: tokio::sync::Mutex::new(()),
            started: std::sync::atomic::AtomicBool::new(false),
            stopping: std::sync::atomic::AtomicBool::new(false),
            limits: crate::limits::InflightLimits::new(options.max_inflight_per_model),
            changes: tokio::sync::watch::Sender::new(()),
        }
    }

    fn records(&self) -> MutexGuard<'_, BTreeMap<String, ModelRecord>> {
        lock(&self.records)
    }

    /// Wakes whenever [`ModelManager::all_available`] may have changed (a version became
    /// available or was taken off, a reconciliation ended, start-up ended, shutdown began), so
    /// that health services push changes as they happen instead of polling.
    pub fn readiness_changes(&self) -> tokio::sync::watch::Receiver<()> {
        self.changes.subscribe()
    }

    fn readiness_may_have_changed(&self) {
        self.changes.send_replace(());
    }

    /// Replaces the set of served models (start-up, config file reload, `ReloadConfig`): models
    /// absent from `configs` are unloaded, new ones are loaded, changed ones re-reconciled. Labels
    /// are checked against the versions available before anything loads, with TF Serving's rule
    /// and text. Returns once every model has been reconciled once; use
    /// [`ModelManager::wait_available`] to wait for the new ones.
    pub async fn apply_config(&self, configs: Vec<ModelConfig>) -> Result<()> {
        let _guard = self.reconcile_lock.lock().await;
        if self.is_stopping() {
            return Err(Error::unavailable("the server is shutting down"));
        }
        self.check_labels(&configs)?;
        let wanted: BTreeSet<String> = configs.iter().map(|c| c.name.clone()).collect();
        let removed: Vec<String> = {
            let mut records = self.records();
            let removed: Vec<String> = records
                .keys()
                .filter(|n| !wanted.contains(*n))
                .cloned()
                .collect();
            for c in &configs {
                match records.get_mut(&c.name) {
                    Some(r) => r.config = c.clone(),
                    None => {
                        records.insert(
                            c.name.clone(),
                            ModelRecord {
                                config: c.clone(),
                                versions: BTreeMap::new(),
                                unloaded: false,
                            },
                        );
                    }
                }
            }
            removed
        };
        for name in removed {
            self.remove_model(&name);
        }
        self.publish();
        for c in &configs {
            self.reconcile_locked(&c.name).await;
        }
        Ok(())
    }

    fn check_labels(&self, configs: &[ModelConfig]) -> Result<()> {
        let records = self.records();
        for c in configs {
            let old = records.get(&c.name);
            for (label, &version) in &c.labels {
                let available = old
                    .and_then(|r| r.versions.get(&version))
                    .is_some_and(|v| v.state == VersionState::Available);
                let moved = old
                    .and_then(|r| r.config.labels.get(label))
                    .is_some_and(|&v| v != version);
                if !available && (moved || !self.options.allow_labels_for_unavailable) {
                    return Err(Error::failed_precondition(format!(
                        "Request to assign label to version {version} of model {}, which is not \
                         currently available for inference{}",
                        c.name,
                        if self.options.allow_labels_for_unavailable {
                            ""
                        } else {
                            " (--allow_version_labels_for_unavailable_models lets a new label \
                             name a version that is not loaded yet)"
                        }
                    )));
                }
            }
        }
        Ok(())
    }

    fn remove_model(&self, name: &str) {
        let record = self.records().remove(name);
        if let Some(record) = record {
            tracing::info!(model = name, "model removed from the configuration");
            for (version, v) in record.versions {
                if let Some(served) = v.served {
                    self.retire(name, version, served);
                }
            }
        }
    }

    /// Start-up in single-model mode: serves `config` and waits until it is available. A base
    /// path without any version directory is an error here rather than a wait, since nothing
    /// else would tell the user why the server never becomes ready.
    pub async fn add_model(&self, config: &ModelConfig, poll: Duration) -> Result<()> {
        if scan_versions(&config.name, &config.base_path)?.is_empty() {
            return Err(no_versions(&config.name, &config.base_path));
        }
        let mut configs: Vec<ModelConfig> =
            self.records().values().map(|r| r.config.clone()).collect();
        configs.retain(|c| c.name != config.name);
        configs.push(config.clone());
        self.apply_config(configs).await?;
        self.wait_available(std::slice::from_ref(&config.name), poll)
            .await?;
        if self.model_ready(&config.name) {
            return Ok(());
        }
        // The only model cannot load (its runtime library is missing): say why.
        let reason = self
            .status(&config.name, None)?
            .into_iter()
            .find_map(|s| s.error)
            .unwrap_or_else(|| Error::unavailable("no version became available"));
        Err(reason)
    }

    /// Re-reads every model's base path and applies what changed (one poll of the file system).
    pub async fn poll(&self) {
        let _guard = self.reconcile_lock.lock().await;
        if self.is_stopping() {
            return;
        }
        let names: Vec<String> = self.records().keys().cloned().collect();
        for name in names {
            self.reconcile_locked(&name).await;
        }
    }

    /// Reconciles one model: load the aspired versions not yet loaded, then unload the rest.
    async fn reconcile_locked(&self, name: &str) {
        // Shutting down: nothing loads any more (polls, config reloads, repository loads).
        if self.is_stopping() {
            return;
        }
        let Some((config, unloaded)) = self
            .records()
            .get(name)
            .map(|r| (r.config.clone(), r.unloaded))
        else {
            return;
        };
        if unloaded {
            self.retire_all(name);
            return;
        }
        let found = match scan_versions(name, &config.base_path) {
            Ok(found) => found,
            Err(e) => {
                // Other models keep updating; this one keeps what it serves.
                tracing::error!(model = name, error = %e.message, "cannot scan base path");
                return;
            }
        };
        if found.is_empty() {
            tracing::warn!(
                model = name,
                "{}",
                no_versions(name, &config.base_path).message
            );
        }
        let now = SystemTime::now();
        let ready: Vec<i64> = found
            .iter()
            .filter(|(v, f)| {
                let settled = f.fingerprint.settled(self.options.settle, now);
                if !settled {
                    tracing::debug!(model = name, version = **v, "version still being written");
                }
                settled
            })
            .map(|(v, _)| *v)
            .collect();
        // A version that was never seen settled is not aspired yet; one being rewritten while
        // loaded keeps serving.
        let mut aspired = select_versions(&config.version_policy, &ready);
        if let VersionPolicy::Latest(_) = config.version_policy {
            // Don't let an unsettled newer directory push a loaded one out of "latest n".
            let all: Vec<i64> = found.keys().copied().collect();
            let newest = select_versions(&config.version_policy, &all);
            aspired.retain(|v| newest.contains(v) || self.is_loaded(name, *v));
        }

        // Load, highest first, so that "latest" requests move forward as early as possible.
        for &version in aspired.iter().rev() {
            let Some(f) = found.get(&version) else {
                continue;
            };
            if !self.should_load(name, version, &f.fingerprint) {
                continue;
            }
            self.load(&config, version, f.path.clone(), f.fingerprint)
                .await;
        }

        // Unload what is no longer aspired, keeping availability: only once an aspired version
        // is serving (or none is aspired at all); otherwise keep the newest one serving.
        let (retire, keep_one): (Vec<(i64, Arc<ServedVersion>)>, bool) = {
            let mut records = self.records();
            let Some(record) = records.get_mut(name) else {
                return;
            };
            let aspired_ready = aspired.iter().any(|v| {
                record
                    .versions
                    .get(v)
                    .is_some_and(|r| r.state == VersionState::Available)
            });
            let unaspired: Vec<i64> = record
                .versions
                .iter()
                .filter(|(v, r)| r.served.is_some() && !aspired.contains(v))
                .map(|(v, _)| *v)
                .collect();
            let keep_one = !aspired.is_empty() && !aspired_ready;
            let drop_list: Vec<i64> = if keep_one {
                unaspired.iter().rev().skip(1).copied().collect()
            } else {
                unaspired
            };
            let mut out = Vec::new();
            for v in drop_list {
                if let Some(r) = record.versions.get_mut(&v) {
                    if let Some(served) = r.served.take() {
                        r.state = VersionState::Unloading;
                        out.push((v, served));
                    }
                }
            }
            (out, keep_one)
        };
        if keep_one && !retire.is_empty() {
            tracing::info!(
                model = name,
                "keeping one old version serving until a new one loads"
            );
        }
        if !retire.is_empty() {
            self.publish();
            for (version, served) in retire {
                self.retire(name, version, served);
            }
        }
        self.forget_ended(name, &found);
        // Failed loads and repository unloads change readiness without a new snapshot.
        self.readiness_may_have_changed();
    }

    /// Forgets the versions that ended and whose directory is gone, all but the newest
    /// [`ENDED_KEPT`]. TF Serving lists every version it ever saw, a status that grows with
    /// each rollout (tensorflow/serving#1488); the recent ones stay for operators to read.
    fn forget_ended(&self, name: &str, found: &BTreeMap<i64, FoundVersion>) {
        let mut records = self.records();
        let Some(record) = records.get_mut(name) else {
            return;
        };
        let gone: Vec<i64> = record
            .versions
            .iter()
            .filter(|(v, r)| r.state == VersionState::End && !found.contains_key(v))
            .map(|(v, _)| *v)
            .collect();
        for v in gone.iter().rev().skip(ENDED_KEPT) {
            record.versions.remove(v);
        }
    }

    fn is_loaded(&self, name: &str, version: i64) -> bool {
        self.records()
            .get(name)
            .and_then(|r| r.versions.get(&version))
            .is_some_and(|v| v.served.is_some())
    }

    /// Whether `version` needs a load attempt now.
    fn should_load(&self, name: &str, version: i64, fp: &Fingerprint) -> bool {
        let records = self.records();
        let Some(v) = records.get(name).and_then(|r| r.versions.get(&version)) else {
            return true;
        };
        if v.served.is_some() || v.state == VersionState::Loading {
            return false;
        }
        match &v.failed {
            None => v.state == VersionState::End || v.state == VersionState::Start,
            Some((failed_fp, attempts, at)) => {
                failed_fp != fp
                    || (*attempts <= self.options.max_load_retries
                        && at.elapsed() >= self.options.load_retry_interval)
            }
        }
    }

    fn set_state(&self, name: &str, version: i64, state: VersionState, error: Option<Error>) {
        if let Some(r) = self.records().get_mut(name) {
            let v = r
                .versions
                .entry(version)
                .or_insert_with(|| VersionRecord::new(state));
            v.state = state;
            v.error = error;
        }
    }

    async fn load(&self, config: &ModelConfig, version: i64, path: PathBuf, fp: Fingerprint) {
        let name = config.name.as_str();
        self.set_state(name, version, VersionState::Loading, None);
        let started = Instant::now();
        let loaded = self.load_version(config, version, path.clone()).await;
        if let Some(o) = &self.options.observer {
            o.loaded(
                name,
                version,
                &path,
                started.elapsed(),
                loaded.as_ref().err(),
            );
        }
        match loaded {
            Ok(served) => {
                let served = Arc::new(served);
                if let Some(r) = self.records().get_mut(name) {
                    let v = r
                        .versions
                        .entry(version)
                        .or_insert_with(|| VersionRecord::new(VersionState::Available));
                    v.state = VersionState::Available;
                    v.error = None;
                    v.failed = None;
                    v.served = Some(Arc::clone(&served));
                }
                self.publish();
                tracing::info!(
                    model = name,
                    version,
                    platform = served.platform,
                    path = %path.display(),
                    ms = started.elapsed().as_millis() as u64,
                    "version available"
                );
            }
            Err(e) => {
                tracing::error!(model = name, version, error = %e.message, "version failed to load");
                if let Some(r) = self.records().get_mut(name) {
                    let v = r
                        .versions
                        .entry(version)
                        .or_insert_with(|| VersionRecord::new(VersionState::End));
                    let attempts = match &v.failed {
                        Some((old, n, _)) if *old == fp => n + 1,
                        _ => 1,
                    };
                    v.state = VersionState::End;
                    v.error = Some(e);
                    v.failed = Some((fp, attempts, Instant::now()));
                }
            }
        }
    }

    async fn load_version(
        &self,
        config: &ModelConfig,
        version: i64,
        path: PathBuf,
    ) -> Result<ServedVersion> {
        let platform = config.platform.as_deref();
        let runtime =
            self.registry
                .for_dir(&path, platform)
                .cloned()
                .ok_or_else(|| match platform {
                    Some(p) => Error::not_found(format!(
                        "{} holds no {p} model (model {} is configured with model_platform {p})",
                        path.display(),
                        config.name
                    )),
                    None => Error::not_found(format!(
                        "{} holds no model this server can load (looked for: {})",
                        path.display(),
                        self.registry.platforms().join(", ")
                    )),
                })?;
        let mut executor = self.options.executor.clone();
        if self.options.per_model_batching {
            executor.batching = per_model_batching(&path)?;
        }
        let label = format!("{}:{version}", config.name);
        let load_path = path.clone();
        let platform = runtime.platform();
        if let Some(o) = &self.options.observer {
            executor.observer = o.executor(&config.name, version, platform);
        }
        let (model, executor) = tokio::task::spawn_blocking(move || {
            let model = runtime.load(&load_path)?;
            let executor = Executor::start(&label, Arc::clone(&model), executor)?;
            Ok::<_, Error>((model, executor))
        })
        .await
        .map_err(|e| Error::internal(format!("model load task failed: {e}")))??;
        let served = ServedVersion::new(
            config.name.clone(),
            version,
            path,
            platform,
            model,
            executor,
            self.limits.for_model(&config.name),
        );
        if let Some(warmup) = &self.options.warmup {
            let started = Instant::now();
            match warmup.warmup(&served).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    model = %config.name,
                    version,
                    records = n,
                    ms = started.elapsed().as_millis() as u64,
                    "warmup done"
                ),
                Err(e) => {
                    let _ = tokio::task::spawn_blocking(move || served.shutdown()).await;
                    return Err(Error::new(e.kind, format!("warmup failed: {}", e.message)));
                }
            }
        }
        Ok(served)
    }

    /// Releases a version once its last request has finished: off the async runtime, so that
    /// closing a runtime session never stalls request handling. The version is marked END when
    /// its memory is gone.
    fn retire(&self, name: &str, version: i64, served: Arc<ServedVersion>) -> JoinHandle<()> {
        tracing::info!(model = name, version, "unloading version");
        let records = Arc::clone(&self.records);
        let observer = self.options.observer.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            release(served).await;
            if let Some(o) = observer {
                o.unloaded(&name, version);
            }
            if let Some(v) = lock(&records)
                .get_mut(&name)
                .and_then(|r| r.versions.get_mut(&version))
            {
                if v.state == VersionState::Unloading {
                    v.state = VersionState::End;
                }
            }
            tracing::info!(model = %name, version, "version unloaded");
        })
    }

    /// Publishes a new snapshot built from the records.
    fn publish(&self) {
        let records = self.records();
        let models = records
            .iter()
            .map(|(name, r)| {
                let versions = r
                    .versions
                    .iter()
                    .filter(|(_, v)| v.state == VersionState::Available)
                    .filter_map(|(k, v)| v.served.as_ref().map(|s| (*k, Arc::clone(s))))
                    .collect();
                (
                    name.clone(),
                    ModelEntry {
                        versions,
                        labels: r.config.labels.clone(),
                    },
                )
            })
            .collect();
        self.snapshot.store(Arc::new(Snapshot { models }));
        self.readiness_may_have_changed();
    }
}

/// Waits until the last request has let go of `served`, then stops its workers and closes its
/// session on a blocking thread.
async fn release(mut served: Arc<ServedVersion>) {
    let owned = loop {
        match Arc::try_unwrap(served) {
            Ok(owned) => break owned,
            Err(still_shared) => {
                served = still_shared;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let _ = tokio::task::spawn_blocking(move || owned.shutdown()).await;
}

/// The batching parameters in a version directory (`batching_params.pbtxt`), if any.
fn per_model_batching(dir: &std::path::Path) -> Result<Option<aegis_batch::BatchingConfig>> {
    let file = dir.join("batching_params.pbtxt");
    match std::fs::read_to_string(&file) {
        Ok(text) => crate::parse_batching_parameters_text(&text)
            .map(Some)
            .map_err(|e| Error::new(e.kind, format!("{}: {}", file.display(), e.message))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::failed_precondition(format!(
            "cannot read {}: {e}",
            file.display()
        ))),
    }
}

/// Locks the records; a panic while holding the lock leaves plain data behind, so keep serving.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ModelManager {
    /// The version that serves a request, with TF Serving's errors when there is none.
    pub fn resolve(&self, name: &str, selector: &VersionSelector) -> Result<Arc<ServedVersion>> {
        if name.is_empty() {
            return Err(Error::invalid_argument("ModelSpec has no name specified."));
        }
        let snapshot = self.snapshot.load();
        let entry = snapshot.models.get(name);
        let version = match selector {
            VersionSelector::Latest => entry.and_then(|e| e.versions.keys().next_back().copied()),
            VersionSelector::Specific(v) => Some(*v),
            VersionSelector::Label(label) => {
                Some(*entry.and_then(|e| e.labels.get(label)).ok_or_else(|| {
                    Error::invalid_argument(format!("Unrecognized servable version label: {label}"))
                })?)
            }
        };
        version
            .and_then(|v| entry.and_then(|e| e.versions.get(&v)))
            .cloned()
            .ok_or_else(|| {
                Error::not_found(match (selector, version) {
                    (VersionSelector::Latest, _) | (_, None) => {
                        format!("Servable not found for request: Latest({name})")
                    }
                    (_, Some(v)) => {
                        format!("Servable not found for request: Specific({name}, {v})")
                    }
                })
            })
    }

    /// The versions serving now: every model's, one model's, or one version of it (lowest
    /// first). A configured model with nothing loaded has none; an unknown model or a version
    /// that is not serving is NOT_FOUND.
    pub fn served_versions(
        &self,
        name: Option<&str>,
        version: Option<i64>,
    ) -> Result<Vec<Arc<ServedVersion>>> {
        let snapshot = self.snapshot.load();
        let Some(name) = name else {
            let mut all: Vec<(&String, &ModelEntry)> = snapshot.models.iter().collect();
            all.sort_by(|a, b| a.0.cmp(b.0));
            return Ok(all
                .into_iter()
                .flat_map(|(_, e)| e.versions.values().cloned())
                .collect());
        };
        let entry = snapshot.models.get(name).ok_or_else(|| {
            Error::not_found(format!("model '{name}' is not in the model configuration"))
        })?;
        match version {
            None => Ok(entry.versions.values().cloned().collect()),
            Some(v) => entry
                .versions
                .get(&v)
                .cloned()
                .map(|s| vec![s])
                .ok_or_else(|| {
                    Error::not_found(format!("version {v} of model '{name}' is not serving"))
                }),
        }
    }

    /// Status of every version of `name` (highest first), or of one version.
    pub fn status(&self, name: &str, version: Option<i64>) -> Result<Vec<VersionStatus>> {
        let records = self.records();
        let versions = records
            .get(name)
            .map(|r| &r.versions)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                Error::not_found(format!("Could not find any versions of model {name}"))
            })?;
        let status = |(&version, v): (&i64, &VersionRecord)| VersionStatus {
            version,
            state: v.state,
            error: v.error.clone(),
        };
        match version {
            None => Ok(versions.iter().rev().map(status).collect()),
            Some(v) => versions
                .get_key_value(&v)
                .map(|kv| vec![status(kv)])
                .ok_or_else(|| {
                    Error::not_found(format!("Could not find version {v} of model {name}"))
                }),
        }
    }

    /// Every configured model with its versions and labels, by name.
    pub fn models(&self) -> Vec<ModelSummary> {
        self.records()
            .iter()
            .map(|(name, r)| ModelSummary {
                name: name.clone(),
                base_path: r.config.base_path.clone(),
                versions: r
                    .versions
                    .iter()
                    .rev()
                    .map(|(&version, v)| VersionStatus {
                        version,
                        state: v.state,
                        error: v.error.clone(),
                    })
                    .collect(),
                labels: r.config.labels.clone(),
            })
            .collect()
    }

    /// Whether `name` can serve: it has an available version and every label names one.
    pub fn model_ready(&self, name: &str) -> bool {
        self.snapshot.load().models.get(name).is_some_and(|e| {
            !e.versions.is_empty() && e.labels.values().all(|v| e.versions.contains_key(v))
        })
    }

    /// Whether `name` cannot load because its platform's runtime library is missing: it has
    /// versions, none available or loading, and each failed as UNAVAILABLE.
    pub fn platform_disabled(&self, name: &str) -> bool {
        self.records().get(name).is_some_and(|r| {
            !r.versions.is_empty()
                && r.versions.values().all(|v| {
                    v.state == VersionState::End
                        && v.error
                            .as_ref()
                            .is_some_and(|e| e.kind == aegis_core::ErrorKind::Unavailable)
                })
        })
    }

    /// Readiness: the initial load has finished (see [`ModelManager::mark_started`]) and every
    /// configured model can serve.
    pub fn all_available(&self) -> bool {
        if self.is_stopping() || !self.started.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        // A model unloaded on purpose does not make the server unready.
        let names: Vec<String> = self
            .records()
            .iter()
            .filter(|(_, r)| !r.unloaded)
            .map(|(n, _)| n.clone())
            .collect();
        names
            .iter()
            .all(|n| self.model_ready(n) || self.platform_disabled(n))
    }

    /// Begins shutdown: readiness turns false at once and no version loads any more. Requests
    /// keep being served until [`ModelManager::unload_all`].
    pub fn begin_shutdown(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        self.readiness_may_have_changed();
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Ends shutdown: stops serving every version, then waits until each has been released by
    /// its last request, its workers joined and its session closed. Returns how many versions
    /// were unloaded.
    pub async fn unload_all(&self) -> usize {
        self.begin_shutdown();
        // Waits for a load in progress, and keeps new ones out.
        let _guard = self.reconcile_lock.lock().await;
        let mut unloading = Vec::new();
        {
            let mut records = self.records();
            for (name, record) in records.iter_mut() {
                for (&version, v) in record.versions.iter_mut() {
                    if let Some(served) = v.served.take() {
                        v.state = VersionState::Unloading;
                        unloading.push((name.clone(), version, served));
                    }
                }
            }
        }
        self.publish();
        let handles: Vec<JoinHandle<()>> = unloading
            .into_iter()
            .map(|(name, version, served)| self.retire(&name, version, served))
            .collect();
        let n = handles.len();
        for h in handles {
            let _ = h.await;
        }
        n
    }

    /// Ends start-up: one more pass loads every aspired version that is ready on disk (so that
    /// readiness does not turn true while a model's second version is still loading), then
    /// readiness follows the version states.
    pub async fn mark_started(&self) {
        self.poll().await;
        self.started
            .store(true, std::sync::atomic::Ordering::Release);
        self.readiness_may_have_changed();
    }

    /// Waits until each of `names` has an available version, polling the file system every
    /// `poll`. Fails as soon as a model cannot become available without outside help: its base
    /// path is missing, or a version failed to load and nothing else is loading (TF Serving's
    /// start-up error, without its minutes of retries); keeps waiting while versions are still
    /// being written or none exists yet.
    pub async fn wait_available(&self, names: &[String], poll: Duration) -> Result<()> {
        loop {
            let mut failed = Vec::new();
            let mut waiting = false;
            for name in names {
                if self.model_ready(name) {
                    continue;
                }
                let Some(config) = self.records().get(name).map(|r| r.config.clone()) else {
                    failed.push(format!("{{name: {name} due to error: not configured}}"));
                    continue;
                };
                if let Err(e) = std::fs::read_dir(&config.base_path) {
                    failed.push(format!(
                        "{{name: {name} due to error: Could not find base path {}: {e}}}",
                        config.base_path.display()
                    ));
                    continue;
                }
                let records = self.records();
                let errors: Vec<String> = records
                    .get(name)
                    .map(|r| {
                        r.versions
                            .iter()
                            .filter(|(_, rec)| rec.state == VersionState::End)
                            .filter_map(|(v, rec)| {
                                rec.error.as_ref().map(|e| {
                                    format!(
                                        "{{name: {name} version: {v}}} due to error: {}",
                                        e.message
                                    )
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let loading = records.get(name).is_some_and(|r| {
                    r.versions
                        .values()
                        .any(|v| matches!(v.state, VersionState::Loading | VersionState::Start))
                });
                drop(records);
                if !errors.is_empty() && !loading {
                    if self.platform_disabled(name) {
                        // Its runtime library is missing: reported in its status and the log;
                        // the other models serve.
                        continue;
                    }
                    failed.extend(errors);
                } else {
                    waiting = true;
                }
            }
            if !failed.is_empty() {
                return Err(Error::new(
                    aegis_core::ErrorKind::Unknown,
                    format!(
                        "{} servable(s) did not become available: {{{}, }}",
                        failed.len(),
                        failed.join(", ")
                    ),
                ));
            }
            if !waiting {
                return Ok(());
            }
            tokio::time::sleep(poll).await;
            self.poll().await;
        }
    }
}
