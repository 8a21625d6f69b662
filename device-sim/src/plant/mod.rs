//! The pump plant: a simulated centrifugal pump station with believable physics and injectable
//! faults, served over Modbus TCP with the register map of the `pump-map` crate.
//!
//! The physics, the register map and the control interface are documented in the project's
//! `docs/plant.md`.
//!
//! # Layout
//! - [`model`]: the pure model, [`PlantModel`]: seeded, stepped by the caller, no I/O, no clock.
//!   The served plant, the tests and the dataset generator all drive this one model.
//! - [`fault`]: the faults that can be injected, checked before they reach the model.
//! - `modbus`: the Modbus TCP server (tokio-modbus), answering from the model.
//! - `control`: the HTTP control interface (axum): state, fault injection and clearing.
//! - [`serve`] wires them: a tokio interval advances the model with real elapsed time, scaled by
//!   [`PlantConfig::time_scale`]; [`run`] is the `device-sim plant` subcommand.

pub mod fault;
pub mod model;

mod control;
mod modbus;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

pub use fault::{ActiveFault, Fault, FaultError, FaultKind};
pub use model::{Initial, Noise, PlantModel, PlantParams};

/// How long [`PlantHandle::shutdown`] lets in-flight control requests finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The model shared by the ticker and the two servers. Critical sections are short and never span
/// an `.await`.
pub type SharedPlant = Arc<Mutex<PlantModel>>;

/// Locks the model. A panic while holding the lock cannot leave the model half-updated in a way
/// that matters more than stopping the plant would, so a poisoned lock is used as is.
pub fn lock(plant: &SharedPlant) -> MutexGuard<'_, PlantModel> {
    plant.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How to serve the plant.
#[derive(Debug, Clone)]
pub struct PlantConfig {
    /// Modbus TCP listen address (port 0 picks a free port).
    pub modbus: SocketAddr,
    /// Control HTTP listen address; must be a loopback address.
    pub control: SocketAddr,
    /// Noise seed.
    pub seed: u64,
    /// How often the model is advanced and the readings refreshed.
    pub tick: Duration,
    /// Simulated seconds per real second (1 = real time; 60 shows an hour of thermal drift in a
    /// minute).
    pub time_scale: f64,
    /// The plant's physics.
    pub params: PlantParams,
}

impl Default for PlantConfig {
    fn default() -> Self {
        PlantConfig {
            modbus: SocketAddr::from(([127, 0, 0, 1], 5020)),
            control: SocketAddr::from(([127, 0, 0, 1], 5021)),
            seed: 1,
            tick: Duration::from_millis(100),
            time_scale: 1.0,
            params: PlantParams::default(),
        }
    }
}

/// Why the plant could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not be bound (address in use, no permission): free the port or pick another.
    #[error("cannot bind the {what} listener on {addr}")]
    Bind {
        /// `modbus` or `control`.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is unusable; fix it.
    #[error("bad plant configuration: {0}")]
    Config(String),
}

impl ServeError {
    /// Whether the configuration is at fault (retrying with it cannot help).
    pub fn is_configuration(&self) -> bool {
        matches!(self, ServeError::Config(_))
    }
}

/// A served plant. Dropping it stops the servers and the clock; [`PlantHandle::shutdown`] also
/// waits for them.
#[derive(Debug)]
pub struct PlantHandle {
    modbus_addr: SocketAddr,
    control_addr: SocketAddr,
    plant: SharedPlant,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl PlantHandle {
    /// The bound Modbus TCP address.
    pub fn modbus_addr(&self) -> SocketAddr {
        self.modbus_addr
    }

    /// The bound control HTTP address.
    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// The model behind the servers, for in-process observers (the demo's report).
    pub fn plant(&self) -> SharedPlant {
        Arc::clone(&self.plant)
    }

    /// Stops the servers and the clock and waits for them; open connections are closed. An HTTP
    /// request still in flight after [`SHUTDOWN_GRACE`] is cut off.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        for mut task in self.tasks.drain(..) {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

impl Drop for PlantHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Starts the plant: binds both listeners, then serves Modbus and the control API and advances the
/// model every `config.tick` until the handle is shut down or dropped.
pub async fn serve(config: PlantConfig) -> Result<PlantHandle, ServeError> {
    if !config.control.ip().is_loopback() {
        return Err(ServeError::Config(format!(
            "the control interface injects faults and must listen on loopback, not {}",
            config.control
        )));
    }
    if config.tick.is_zero() {
        return Err(ServeError::Config("the tick must be longer than zero".into()));
    }
    if !(config.time_scale.is_finite() && config.time_scale > 0.0) {
        return Err(ServeError::Config(format!("time scale {} must be a positive number", config.time_scale)));
    }
    let bind = |what, addr| async move {
        TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { what, addr, source })
    };
    let modbus_listener = bind("modbus", config.modbus).await?;
    let control_listener = bind("control", config.control).await?;
    let local = |what, l: &TcpListener, addr| l.local_addr().map_err(|source| ServeError::Bind { what, addr, source });
    let modbus_addr = local("modbus", &modbus_listener, config.modbus)?;
    let control_addr = local("control", &control_listener, config.control)?;

    let plant: SharedPlant = Arc::new(Mutex::new(PlantModel::new(config.params, config.seed)));
    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(tick(Arc::clone(&plant), config.tick, config.time_scale, cancel.clone())));
    tasks.push(tokio::spawn(modbus::run(modbus_listener, Arc::clone(&plant), cancel.clone())));
    let app = control::router(Arc::clone(&plant));
    let stop = cancel.clone();
    tasks.push(tokio::spawn(async move {
        let served = axum::serve(control_listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
        if let Err(err) = served {
            tracing::error!("control interface stopped: {err}");
        }
    }));
    tracing::info!(%modbus_addr, %control_addr, seed = config.seed, "plant serving");
    Ok(PlantHandle { modbus_addr, control_addr, plant, cancel, tasks })
}

/// Advances the model by the real time elapsed since the last tick, times `time_scale`, so a late
/// tick neither loses nor invents simulated time.
async fn tick(plant: SharedPlant, every: Duration, time_scale: f64, cancel: CancellationToken) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = interval.tick() => {
                let now = Instant::now();
                let dt = (now - last).mul_f64(time_scale);
                last = now;
                lock(&plant).step(dt);
            }
        }
    }
}

/// `device-sim plant`: serves the pump plant until SIGINT or SIGTERM.
#[derive(Debug, Clone, clap::Args)]
pub struct PlantArgs {
    /// Modbus TCP listen address (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5020")]
    pub modbus: SocketAddr,
    /// Control HTTP listen address, loopback only (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5021")]
    pub control: SocketAddr,
    /// Noise seed: the same seed and the same inputs give the same readings.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Model step and reading refresh period, milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub tick_ms: u64,
    /// Simulated seconds per real second.
    #[arg(long, value_name = "FACTOR", default_value_t = 1.0)]
    pub time_scale: f64,
}

/// Runs `device-sim plant`: prints the bound addresses as one JSON line on stdout
/// (`{"modbus":"127.0.0.1:5020","control":"127.0.0.1:5021"}`), then serves until SIGINT or SIGTERM.
pub async fn run(args: PlantArgs) -> anyhow::Result<()> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot install the SIGINT handler")?;
    let handle = serve(PlantConfig {
        modbus: args.modbus,
        control: args.control,
        seed: args.seed,
        tick: Duration::from_millis(args.tick_ms),
        time_scale: args.time_scale,
        params: PlantParams::default(),
    })
    .await
    .context("cannot start the plant")?;
    let line = serde_json::json!({
        "modbus": handle.modbus_addr().to_string(),
        "control": handle.control_addr().to_string(),
    });
    println!("{line}");
    let signal = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    tracing::info!("{signal} received; stopping the plant");
    handle.shutdown().await;
    Ok(())
}
