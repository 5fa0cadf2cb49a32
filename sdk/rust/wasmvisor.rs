//! The Rust guest SDK for wasmvisor: it implements ABI v1 (`abi/README.md`) with the standard
//! library only. It is one source file that a plugin includes as a module:
//!
//! ```ignore
//! #[path = "../../sdk/rust/wasmvisor.rs"] // relative to the plugin's source file
//! mod wasmvisor;
//!
//! // The SDK calls `init` once, from wasmvisor_init: register handlers, callbacks and
//! // metrics here. It is the counterpart of a Go plugin's init().
//! fn init() {
//!     wasmvisor::handle("hello", |input| {
//!         let mut out = b"hello, ".to_vec();
//!         out.extend_from_slice(input);
//!         Ok(out)
//!     });
//! }
//! ```
//!
//! and builds with one command (a WASI reactor, no `_start`):
//!
//! ```sh
//! /usr/bin/rustc --edition 2021 --target wasm32-wasi --crate-type cdylib \
//!     -C opt-level=z -C panic=abort -C lto -C codegen-units=1 -C strip=debuginfo \
//!     -C link-arg=-zstack-size=65536 sdk/rust/hello.rs -o hello.wasm
//! ```
//!
//! (see README.md: toolchain, flags, an optional `wasm-opt` pass).
//!
//! # Rules
//!
//! - The crate root must define `fn init()` (it may be private): the SDK calls it from
//!   `wasmvisor_init`, then fixes the handler list. `handle` after that panics.
//! - The SDK exports `_initialize` (it runs the C library's constructors once, as a WASI
//!   reactor must, and installs the panic hook), `wasmvisor_init`, `_reserve`, `_call`,
//!   `_configure` and `_deliver`, and imports `wasmvisor.log`, `.publish` and `.abort` (and
//!   `.host_fn`, `.host_call` and `.host_result` for `host_call`).
//! - Build with `-C panic=abort`: a panic calls the `abort` import with Rust's panic message
//!   (`panicked at '…', file:line:col`), the call traps with kind `abort`, and the host replaces
//!   the instance. An allocation failure ends in `unreachable` (a memory-limit error).
//! - Handlers and callbacks run one at a time on the one thread of the instance; they may call
//!   every function of this module (`emit`, `config`, metrics, `log`, …).
//!
//! Natively (any target but wasm32) the module compiles with stand-in imports (log to stderr,
//! publish drops, abort panics, host functions are those of `native::set_host_func`) and a `native` module that drives the exports by handler name,
//! so a plugin can be unit-tested with `rustc --test`.

#![allow(dead_code)]

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{compiler_fence, Ordering};

// ---------------------------------------------------------------------------------------------
// ABI constants
// ---------------------------------------------------------------------------------------------

const MAGIC: u32 = 0x6261_7677; // the bytes `w v a b`
const VERSION: u32 = 1;
const KIND_COUNTER: u32 = 1;
const KIND_GAUGE: u32 = 2;
const KIND_HISTOGRAM: u32 = 3;
const MAX_HANDLERS: usize = 1024;
const MAX_METRICS: usize = 1024;
const MAX_BUCKETS: usize = 64;
const MAX_SLOTS: usize = 1 << 16;
const EMPTY_CONFIG: &[u8] = &[0, 0, 0, 0];

/// The input buffer's capacity after `wasmvisor_init`, so that small inputs need no
/// `wasmvisor_reserve`.
const INITIAL_IN_CAP: usize = 4 << 10;

/// A status code of the ABI, returned by every export but `wasmvisor_init`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    Ok = 0,
    Error = 1,
    UnknownHandler = 2,
    InvalidInput = 3,
    ConfigRejected = 4,
    NoMemory = 5,
}

impl Status {
    /// The status of an ABI code; a code this SDK does not know maps to `Status::Error`.
    fn from_u32(st: u32) -> Status {
        match st {
            0 => Status::Ok,
            1 => Status::Error,
            2 => Status::UnknownHandler,
            3 => Status::InvalidInput,
            4 => Status::ConfigRejected,
            5 => Status::NoMemory,
            _ => Status::Error,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/// An error returned by a handler or a callback: an ABI status and a message (bytes, usually
/// UTF-8). `Error::new` and the `From` conversions give `Status::Error`; `invalid_input` gives
/// `Status::InvalidInput`.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    status: Status,
    message: Vec<u8>,
}

impl Error {
    /// An error with `Status::Error`.
    pub fn new(message: impl Into<Vec<u8>>) -> Error {
        Error { status: Status::Error, message: message.into() }
    }

    /// An error with `Status::InvalidInput`: the handler could not decode its input.
    pub fn invalid_input(message: impl Into<Vec<u8>>) -> Error {
        Error { status: Status::InvalidInput, message: message.into() }
    }

    /// The status the error maps to (for a config callback it is always
    /// `Status::ConfigRejected`).
    pub fn status(&self) -> Status {
        self.status
    }

    /// The message handed to the host.
    pub fn message(&self) -> &[u8] {
        &self.message
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Error {
        Error::new(s)
    }
}

impl From<String> for Error {
    fn from(s: String) -> Error {
        Error::new(s)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::new(e.to_string())
    }
}

impl From<fmt::Error> for Error {
    fn from(_: fmt::Error) -> Error {
        Error::new("formatting failed")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.message))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Error({:?}, {:?})", self.status, String::from_utf8_lossy(&self.message))
    }
}

impl std::error::Error for Error {}

/// What a handler returns: its output, or an error.
pub type HandlerResult = Result<Vec<u8>, Error>;

/// Registers handler `h` under `name`; the handler list the host sees is the registration
/// order. Call it from `init()`. It panics if `name` does not match `[A-Za-z0-9_.-]{1,64}`, is
/// already registered, or if the list is already fixed.
///
/// The input is the SDK's input buffer, valid only while `h` runs. An `Err` maps to its status
/// and message; a panic aborts the instance.
pub fn handle(name: &str, h: impl Fn(&[u8]) -> HandlerResult + 'static) {
    with(|g| g.handle(name, Rc::new(h)))
}

/// The applied config: empty until the host's first `wasmvisor_configure`.
pub fn config() -> Config {
    with(|g| g.config.clone().unwrap_or_else(Config::empty))
}

/// Registers `f` to run when `wasmvisor_configure` brings a config that differs, byte for byte
/// in its encoding, from the applied one (the first config counts as a change unless it is
/// empty). Callbacks run in registration order with the old and new configs, before the new
/// one is applied; the first that returns an error rejects the config
/// (`STATUS_CONFIG_REJECTED` with the error's message), the old config stays and the remaining
/// callbacks do not run. A malformed encoding is rejected before any callback, with
/// `malformed config`.
pub fn on_config_change(f: impl Fn(&Config, &Config) -> Result<(), Error> + 'static) {
    with(|g| g.on_config.push(Rc::new(f)))
}

/// Registers `f` to receive the bus events the host delivers (`wasmvisor_deliver`) as
/// `(topic, data)`. Callbacks run in registration order; the first error becomes the
/// delivery's status as for a handler. Without any callback a delivery answers
/// `STATUS_ERROR`; a malformed one answers `STATUS_INVALID_INPUT` `bad delivery`.
pub fn on_event(f: impl Fn(&[u8], &[u8]) -> Result<(), Error> + 'static) {
    with(|g| g.on_event.push(Rc::new(f)))
}

/// The number of event ring slots unless `set_event_capacity` says otherwise.
pub const DEFAULT_EVENT_CAPACITY: usize = 64;

/// The largest event (topic and data together) `emit` records unless `set_max_event_size`
/// says otherwise.
pub const DEFAULT_MAX_EVENT_SIZE: usize = 64 << 10;

/// Sets the number of slots of the event ring; 0 means no ring. Call it in `init()` before any
/// `emit`; it panics later, or if `n` is above 65536.
pub fn set_event_capacity(n: usize) {
    with(|g| {
        if g.ring.header.is_some() {
            panic!("wasmvisor: set_event_capacity after the event ring was set up; call it in init() before any emit");
        }
        if n > MAX_SLOTS {
            panic!("wasmvisor: set_event_capacity({}): want 0 (no ring) to {}", n, MAX_SLOTS);
        }
        g.ring.capacity = n;
    })
}

/// Sets the largest event `emit` records, topic and data together; a larger one is refused and
/// counted in the ring's `dropped` field. It may be called at any time.
pub fn set_max_event_size(n: usize) {
    with(|g| g.ring.max_size = n)
}

/// Records an event in the instance's event ring, which the host reads without calling in.
/// `topic` and `data` are copied. When the ring is full the oldest event is overwritten; an
/// event larger than the maximum size is refused and counted as dropped.
pub fn emit(topic: impl AsRef<[u8]>, data: impl AsRef<[u8]>) {
    with(|g| g.emit(topic.as_ref(), data.as_ref()))
}

/// The host dropped a published event (its bus was full or refused the topic); it counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dropped;

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("wasmvisor: publish: event dropped by the host")
    }
}

impl std::error::Error for Dropped {}

/// Publishes an event on the host's bus through the `publish` import.
pub fn publish(topic: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> Result<(), Dropped> {
    let (t, d) = (topic.as_ref(), data.as_ref());
    match host::publish(t, d) {
        0 => Ok(()),
        _ => Err(Dropped),
    }
}

/// A log level of the `log` import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Level {
    Debug = 0,
    Info = 1,
    Warn = 2,
    Error = 3,
}

/// Sends `msg` to the host's logger at `level`. Format with `format!` first.
pub fn log(level: Level, msg: impl AsRef<[u8]>) {
    host::log(level as u32, msg.as_ref())
}

/// Why `host_call` did not return an output.
#[derive(Clone, PartialEq, Eq)]
pub enum HostFuncError {
    /// The plugin was not granted the function, or the host does not offer it (a plugin cannot
    /// tell the two apart). Grants are fixed for the instance's life, so a denial is cached.
    Denied,
    /// The function failed, as the host reported it: its status (usually `Status::Error`;
    /// `Status::NoMemory` when the SDK could not allocate the output) and message (the host
    /// function's error text, or why its output was refused).
    Failed { status: Status, message: Vec<u8> },
}

impl fmt::Display for HostFuncError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            HostFuncError::Denied => f.write_str("wasmvisor: host function not granted"),
            HostFuncError::Failed { message, .. } => {
                write!(f, "wasmvisor: host function failed: {}", String::from_utf8_lossy(message))
            }
        }
    }
}

impl fmt::Debug for HostFuncError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            HostFuncError::Denied => f.write_str("Denied"),
            HostFuncError::Failed { status, message } => write!(
                f,
                "Failed {{ status: {:?}, message: {:?} }}",
                status,
                String::from_utf8_lossy(message)
            ),
        }
    }
}

impl std::error::Error for HostFuncError {}

/// A handler may return a host function's failure with `?`: it becomes `Status::Error` with
/// the error's text.
impl From<HostFuncError> for Error {
    fn from(e: HostFuncError) -> Error {
        Error::new(e.to_string())
    }
}

/// Calls the host function `name` with `input` and returns its output. The host must offer the
/// function and the plugin's capabilities grant it; otherwise `Err(HostFuncError::Denied)`. A
/// failure of the function is `Err(HostFuncError::Failed { .. })` with the host's status and
/// message. The function runs inside this call, under the call's deadline. The name is looked
/// up once (`host_fn`) and its handle (or denial) cached; then `host_call` runs it and
/// `host_result` copies its output into a buffer of the announced length.
pub fn host_call(name: &str, input: impl AsRef<[u8]>) -> Result<Vec<u8>, HostFuncError> {
    let cached = with(|g| g.host_fns.iter().find(|(n, _)| &**n == name).map(|&(_, h)| h));
    let h = match cached {
        Some(h) => h,
        None => {
            let h = host::host_fn(name.as_bytes());
            with(|g| g.host_fns.push((name.into(), h)));
            h
        }
    };
    if h < 0 {
        return Err(HostFuncError::Denied);
    }
    let r = host::host_call(h, input.as_ref());
    let (status, n) = ((r >> 32) as u32, r as u32 as usize);
    let mut out: Vec<u8> = Vec::new();
    if out.try_reserve_exact(n).is_err() {
        return Err(HostFuncError::Failed { status: Status::NoMemory, message: b"out of memory".to_vec() });
    }
    out.resize(n, 0);
    let got = host::host_result(&mut out);
    if got < 0 || got as usize != n {
        let message = format!("wasmvisor: host function {}: host_result returned {} for {} bytes", name, got, n);
        return Err(HostFuncError::Failed { status: Status::Error, message: message.into_bytes() });
    }
    match status {
        0 => Ok(out),
        st => Err(HostFuncError::Failed { status: Status::from_u32(st), message: out }),
    }
}

/// The applied config: keys to values, both bytes (UTF-8 in practice). Cheap to clone; a
/// `Config` never changes, a new config is a new `Config`.
#[derive(Clone)]
pub struct Config(Rc<ConfigData>);

struct ConfigData {
    raw: Vec<u8>,               // the ABI encoding
    entries: Vec<[usize; 4]>,   // key start, key end, value start, value end, in raw
}

impl Config {
    /// The empty config.
    pub fn empty() -> Config {
        Config(Rc::new(ConfigData { raw: EMPTY_CONFIG.to_vec(), entries: Vec::new() }))
    }

    /// A config holding `pairs` (for tests of config callbacks). A later duplicate key wins.
    pub fn from_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: impl IntoIterator<Item = (K, V)>) -> Config {
        let mut kv: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (k, v) in pairs {
            let (k, v) = (k.as_ref().to_vec(), v.as_ref().to_vec());
            match kv.iter_mut().find(|e| e.0 == k) {
                Some(e) => e.1 = v,
                None => kv.push((k, v)),
            }
        }
        kv.sort();
        let mut raw = (kv.len() as u32).to_le_bytes().to_vec();
        for (k, v) in &kv {
            raw.extend_from_slice(&(k.len() as u32).to_le_bytes());
            raw.extend_from_slice(k);
            raw.extend_from_slice(&(v.len() as u32).to_le_bytes());
            raw.extend_from_slice(v);
        }
        let entries = parse_config(&raw).expect("well-formed");
        Config(Rc::new(ConfigData { raw, entries }))
    }

    /// The value of `key` as a string: `None` when the key is absent or its value is not
    /// UTF-8 (use `get_bytes` for raw values).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.get_bytes(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The value of `key`, or `None` when the key is absent.
    pub fn get_bytes(&self, key: impl AsRef<[u8]>) -> Option<&[u8]> {
        let (raw, key) = (&self.0.raw, key.as_ref());
        self.0
            .entries
            .binary_search_by(|e| raw[e[0]..e[1]].cmp(key))
            .ok()
            .map(|i| &raw[self.0.entries[i][2]..self.0.entries[i][3]])
    }

    /// The `(key, value)` pairs in ascending key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let raw = &self.0.raw;
        self.0.entries.iter().map(move |e| (&raw[e[0]..e[1]], &raw[e[2]..e[3]]))
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.0.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.entries.is_empty()
    }

    /// The config in the ABI's config encoding (`u32 count`, then `u32 len, key, u32 len,
    /// value` per entry, keys ascending), as the host sent it.
    pub fn encoded(&self) -> &[u8] {
        &self.0.raw
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(k, v)| (String::from_utf8_lossy(k), String::from_utf8_lossy(v))))
            .finish()
    }
}

/// A monotonically increasing u64 in a metric record of kind counter. Its value is in guest
/// memory as soon as it changes; the host reads it without calling in. Copy it into the
/// handlers that update it.
#[derive(Clone, Copy, Debug)]
pub struct Counter(usize);

impl Counter {
    /// Declares a counter. Declare metrics in `init()`; the record order is the declaration
    /// order. It panics if `name` does not match `[a-zA-Z_][a-zA-Z0-9_]{0,63}` or is already
    /// declared.
    pub fn new(name: &str) -> Counter {
        Counter(with(|g| g.declare("Counter::new", name, KIND_COUNTER, &[])))
    }

    /// Adds `n` (wrapping at 2^64).
    pub fn add(self, n: u64) {
        with(|g| {
            let r = &mut g.metrics.recs[self.0];
            r.value = r.value.wrapping_add(n);
        })
    }

    /// Adds 1.
    pub fn inc(self) {
        self.add(1)
    }
}

/// An f64 that goes up and down, in a metric record of kind gauge.
#[derive(Clone, Copy, Debug)]
pub struct Gauge(usize);

impl Gauge {
    /// Declares a gauge, with the same rules as `Counter::new`.
    pub fn new(name: &str) -> Gauge {
        Gauge(with(|g| g.declare("Gauge::new", name, KIND_GAUGE, &[])))
    }

    /// Sets the gauge to `v`.
    pub fn set(self, v: f64) {
        with(|g| g.metrics.recs[self.0].value = v.to_bits())
    }

    /// Adds `d` (which may be negative).
    pub fn add(self, d: f64) {
        with(|g| {
            let r = &mut g.metrics.recs[self.0];
            r.value = (f64::from_bits(r.value) + d).to_bits();
        })
    }
}

/// Counts observations in buckets with fixed upper bounds, in a metric record of kind
/// histogram.
#[derive(Clone, Copy, Debug)]
pub struct Histogram(usize);

impl Histogram {
    /// Declares a histogram with the given upper bounds (at most 64, finite, strictly
    /// ascending; a last +Inf bucket is implicit), with the same naming rules as
    /// `Counter::new`. It panics on invalid bounds.
    pub fn new(name: &str, bounds: &[f64]) -> Histogram {
        Histogram(with(|g| g.declare("Histogram::new", name, KIND_HISTOGRAM, bounds)))
    }

    /// Records `v`: it counts `v` in the first bucket whose upper bound is ≥ `v` (else the +Inf
    /// bucket), adds `v` to the sum and 1 to the count.
    pub fn observe(self, v: f64) {
        with(|g| {
            let m = &mut g.metrics.meta[self.0];
            let i = m.bounds.iter().position(|&b| v <= b).unwrap_or(m.bounds.len());
            m.buckets[i] = m.buckets[i].wrapping_add(1);
            let r = &mut g.metrics.recs[self.0];
            r.value = r.value.wrapping_add(1);
            r.sum += v;
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Memory layouts the host reads
// ---------------------------------------------------------------------------------------------

#[repr(C, align(8))]
struct Ctrl {
    magic: u32,
    version: u32,
    in_ptr: u32,
    in_cap: u32,
    out_ptr: u32,
    out_len: u32,
    handlers_ptr: u32,
    handlers_len: u32,
    config_ptr: u32,
    config_len: u32,
    metrics_ptr: u32,
    metrics_count: u32,
    events_ptr: u32,
    flags: u32,
    reserved: u64,
}

#[repr(C, align(8))]
struct RingHeader {
    slots_ptr: u32,
    slot_count: u32,
    written: u64,
    dropped: u64,
    reserved: u64,
}

#[repr(C, align(8))]
struct Slot {
    seq: u64,
    topic_ptr: u32,
    topic_len: u32,
    data_ptr: u32,
    data_len: u32,
}

#[repr(C, align(8))]
struct MetricRecord {
    name_ptr: u32,
    name_len: u32,
    kind: u32,
    bucket_count: u32,
    bounds_ptr: u32,
    buckets_ptr: u32,
    value: u64,
    sum: f64,
    reserved: u64,
}

// The ABI's sizes, checked at compile time.
const _: [(); 64] = [(); std::mem::size_of::<Ctrl>()];
const _: [(); 32] = [(); std::mem::size_of::<RingHeader>()];
const _: [(); 24] = [(); std::mem::size_of::<Slot>()];
const _: [(); 48] = [(); std::mem::size_of::<MetricRecord>()];

/// The guest address of `p`: linear memory is the address space (wasm32).
fn addr<T: ?Sized>(p: *const T) -> u32 {
    p as *const u8 as usize as u32
}

/// The guest address of the bytes of `b`, or 0 when it holds no allocation.
fn addr_of(b: &[u8]) -> u32 {
    if b.is_empty() {
        0
    } else {
        addr(b.as_ptr())
    }
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

type HandlerFn = Rc<dyn Fn(&[u8]) -> HandlerResult>;
type ConfigFn = Rc<dyn Fn(&Config, &Config) -> Result<(), Error>>;
type EventFn = Rc<dyn Fn(&[u8], &[u8]) -> Result<(), Error>>;

/// One instance's whole SDK state. Every address handed to the host points into a heap
/// allocation owned from here, and the state lives for the life of the instance.
struct Guest {
    ctrl: Box<Ctrl>,
    init_done: bool,
    handlers: Vec<(String, HandlerFn)>,
    names: Vec<u8>,
    out: Cow<'static, [u8]>,
    config: Option<Config>,
    on_config: Vec<ConfigFn>,
    on_event: Vec<EventFn>,
    ring: Ring,
    metrics: Metrics,
    host_fns: Vec<(Box<str>, i32)>, // host function handles by name, denials (-1) included
}

struct Ring {
    capacity: usize,
    max_size: usize,
    header: Option<Box<RingHeader>>,
    slots: Box<[Slot]>,
    held: Vec<Vec<u8>>, // held[i] is the storage slot i points into
}

struct Metrics {
    recs: Vec<MetricRecord>, // may move when it grows; the control block follows
    meta: Vec<MetricMeta>,
}

struct MetricMeta {
    name: Box<str>,
    bounds: Box<[f64]>,
    buckets: Box<[u64]>,
}

thread_local! {
    // The instance has one thread; these are plain statics there. The input buffer is apart
    // from the rest so that a handler can read its input while it calls the SDK.
    static GUEST: RefCell<Guest> = RefCell::new(Guest::new());
    static INPUT: RefCell<Vec<u8>> = RefCell::new(Vec::new());
}

/// Runs `f` on the state. Never call user code inside: it may call back into the SDK.
fn with<R>(f: impl FnOnce(&mut Guest) -> R) -> R {
    GUEST.with(|g| f(&mut g.borrow_mut()))
}

impl Guest {
    fn new() -> Guest {
        Guest {
            ctrl: Box::new(Ctrl {
                magic: 0,
                version: 0,
                in_ptr: 0,
                in_cap: 0,
                out_ptr: 0,
                out_len: 0,
                handlers_ptr: 0,
                handlers_len: 0,
                config_ptr: 0,
                config_len: 0,
                metrics_ptr: 0,
                metrics_count: 0,
                events_ptr: 0,
                flags: 0,
                reserved: 0,
            }),
            init_done: false,
            handlers: Vec::new(),
            names: Vec::new(),
            out: Cow::Borrowed(&[]),
            config: None,
            on_config: Vec::new(),
            on_event: Vec::new(),
            ring: Ring {
                capacity: DEFAULT_EVENT_CAPACITY,
                max_size: DEFAULT_MAX_EVENT_SIZE,
                header: None,
                slots: Box::new([]),
                held: Vec::new(),
            },
            metrics: Metrics { recs: Vec::new(), meta: Vec::new() },
            host_fns: Vec::new(),
        }
    }

    fn handle(&mut self, name: &str, h: HandlerFn) {
        if self.init_done {
            panic!("wasmvisor: handle({:?}) after wasmvisor_init: the handler list is fixed; register handlers in init()", name);
        }
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-');
        if !valid {
            panic!("wasmvisor: handle({:?}): a handler name must match [A-Za-z0-9_.-]{{1,64}}", name);
        }
        if self.handlers.len() >= MAX_HANDLERS {
            panic!("wasmvisor: handle({:?}): more than {} handlers", name, MAX_HANDLERS);
        }
        if self.handlers.iter().any(|(n, _)| n == name) {
            panic!("wasmvisor: handle({:?}): duplicate handler name", name);
        }
        self.handlers.push((name.to_string(), h));
    }

    /// The end of wasmvisor_init: fix the handler list, set up the stores, fill the block.
    fn finish_init(&mut self) {
        self.init_done = true;
        let names: Vec<&str> = self.handlers.iter().map(|(n, _)| n.as_str()).collect();
        self.names = names.join("\n").into_bytes();
        self.ring.setup();
        self.ctrl.magic = MAGIC;
        self.ctrl.version = VERSION;
        INPUT.with(|i| {
            let mut i = i.borrow_mut();
            if i.is_empty() {
                *i = vec![0; INITIAL_IN_CAP];
            }
            self.ctrl.in_ptr = addr_of(&i);
            self.ctrl.in_cap = i.len() as u32;
        });
        self.sync();
    }

    /// Writes the pointer/length fields of the control block that follow the stores. A no-op
    /// before wasmvisor_init (the host does not read the block before then). in_ptr/in_cap
    /// and out_ptr/out_len are written where they change.
    fn sync(&mut self) {
        if !self.init_done {
            return;
        }
        let c = &mut *self.ctrl;
        c.handlers_ptr = addr_of(&self.names);
        c.handlers_len = self.names.len() as u32;
        match &self.config {
            Some(cfg) => {
                c.config_ptr = addr_of(&cfg.0.raw);
                c.config_len = cfg.0.raw.len() as u32;
            }
            None => {
                c.config_ptr = 0;
                c.config_len = 0;
            }
        }
        c.metrics_ptr = if self.metrics.recs.is_empty() { 0 } else { addr(self.metrics.recs.as_ptr()) };
        c.metrics_count = self.metrics.recs.len() as u32;
        c.events_ptr = match &self.ring.header {
            Some(h) => addr(&**h),
            None => 0,
        };
    }

    /// Makes `out` the output of the current export and returns `st`.
    fn set_out(&mut self, st: Status, out: Cow<'static, [u8]>) -> u32 {
        self.out = out;
        self.ctrl.out_ptr = addr_of(&self.out);
        self.ctrl.out_len = self.out.len() as u32;
        st as u32
    }

    fn declare(&mut self, what: &str, name: &str, kind: u32, bounds: &[f64]) -> usize {
        let b = name.as_bytes();
        let valid = !b.is_empty()
            && b.len() <= 64
            && (b[0].is_ascii_alphabetic() || b[0] == b'_')
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_');
        if !valid {
            panic!("wasmvisor: {}({:?}): a metric name must match [a-zA-Z_][a-zA-Z0-9_]{{0,63}}", what, name);
        }
        if self.metrics.meta.iter().any(|m| &*m.name == name) {
            panic!("wasmvisor: {}({:?}): duplicate metric name", what, name);
        }
        if self.metrics.meta.len() >= MAX_METRICS {
            panic!("wasmvisor: {}({:?}): more than {} metrics", what, name, MAX_METRICS);
        }
        if bounds.len() > MAX_BUCKETS {
            panic!("wasmvisor: {}({:?}): {} bounds, at most {}", what, name, bounds.len(), MAX_BUCKETS);
        }
        for (i, &v) in bounds.iter().enumerate() {
            if !v.is_finite() {
                panic!("wasmvisor: {}({:?}): bound {} is not finite", what, name, v);
            }
            if i > 0 && v <= bounds[i - 1] {
                panic!("wasmvisor: {}({:?}): bounds not strictly ascending at {}", what, name, v);
            }
        }
        let meta = MetricMeta {
            name: name.into(),
            bounds: bounds.into(),
            buckets: if kind == KIND_HISTOGRAM { vec![0; bounds.len() + 1].into() } else { Box::new([]) },
        };
        let rec = MetricRecord {
            name_ptr: addr(meta.name.as_ptr()),
            name_len: meta.name.len() as u32,
            kind,
            bucket_count: if kind == KIND_HISTOGRAM { bounds.len() as u32 } else { 0 },
            bounds_ptr: if kind == KIND_HISTOGRAM && !bounds.is_empty() { addr(meta.bounds.as_ptr()) } else { 0 },
            buckets_ptr: if kind == KIND_HISTOGRAM { addr(meta.buckets.as_ptr()) } else { 0 },
            value: 0,
            sum: 0.0,
            reserved: 0,
        };
        self.metrics.meta.push(meta);
        self.metrics.recs.push(rec);
        self.sync();
        self.metrics.recs.len() - 1
    }

    fn emit(&mut self, topic: &[u8], data: &[u8]) {
        if self.ring.header.is_none() {
            self.ring.setup();
            if self.ring.header.is_none() {
                return; // no ring
            }
            self.sync();
        }
        self.ring.record(topic, data);
    }
}

impl Ring {
    /// Allocates the ring and writes its header on first use (emit or wasmvisor_init).
    fn setup(&mut self) {
        if self.header.is_some() || self.capacity == 0 {
            return;
        }
        self.slots = (0..self.capacity)
            .map(|_| Slot { seq: u64::MAX, topic_ptr: 0, topic_len: 0, data_ptr: 0, data_len: 0 })
            .collect();
        self.held = (0..self.capacity).map(|_| Vec::new()).collect();
        self.header = Some(Box::new(RingHeader {
            slots_ptr: addr(self.slots.as_ptr()),
            slot_count: self.capacity as u32,
            written: 0,
            dropped: 0,
            reserved: 0,
        }));
    }

    /// Records an event with the ABI's order of writes, so that a host reading the ring after
    /// an interrupted call never sees a torn event: invalidate the slot, write the bytes and
    /// the fields, write seq, then increment written.
    fn record(&mut self, topic: &[u8], data: &[u8]) {
        let h = self.header.as_mut().expect("ring set up");
        let fits = topic.len().checked_add(data.len()).map_or(false, |n| n <= self.max_size);
        if !fits {
            let d = h.dropped + 1;
            unsafe { std::ptr::write_volatile(&mut h.dropped, d) };
            return;
        }
        let seq = h.written;
        let i = (seq % self.capacity as u64) as usize;
        let slot = &mut self.slots[i];
        unsafe { std::ptr::write_volatile(&mut slot.seq, u64::MAX) };
        compiler_fence(Ordering::SeqCst);
        let buf = &mut self.held[i];
        buf.clear();
        buf.extend_from_slice(topic);
        buf.extend_from_slice(data);
        let base = addr_of(buf);
        slot.topic_ptr = base;
        slot.topic_len = topic.len() as u32;
        slot.data_ptr = if data.is_empty() { 0 } else { base + topic.len() as u32 };
        slot.data_len = data.len() as u32;
        compiler_fence(Ordering::SeqCst);
        unsafe { std::ptr::write_volatile(&mut slot.seq, seq) };
        compiler_fence(Ordering::SeqCst);
        unsafe { std::ptr::write_volatile(&mut h.written, seq + 1) };
    }
}

/// Checks the ABI's config encoding: `u32 count`, then `count` entries of `u32 key_len, key,
/// u32 value_len, value`, every length inside the input, keys strictly ascending, nothing
/// left over. Returns the entries' byte ranges.
fn parse_config(b: &[u8]) -> Option<Vec<[usize; 4]>> {
    fn u32_at(b: &[u8], pos: usize) -> Option<usize> {
        let w = b.get(pos..pos.checked_add(4)?)?;
        Some(u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as usize)
    }
    let count = u32_at(b, 0)?;
    let mut pos = 4;
    let mut entries = Vec::new();
    for _ in 0..count {
        let klen = u32_at(b, pos)?;
        let k0 = pos + 4;
        if klen > b.len() - k0 {
            return None;
        }
        let k1 = k0 + klen;
        if let Some(prev) = entries.last() {
            let prev: &[usize; 4] = prev;
            if b[prev[0]..prev[1]] >= b[k0..k1] {
                return None;
            }
        }
        let vlen = u32_at(b, k1)?;
        let v0 = k1 + 4;
        if vlen > b.len() - v0 {
            return None;
        }
        pos = v0 + vlen;
        entries.push([k0, k1, v0, pos]);
    }
    if pos != b.len() {
        return None;
    }
    Some(entries)
}

// ---------------------------------------------------------------------------------------------
// Exports
// ---------------------------------------------------------------------------------------------

/// The input length the host announced, checked against the buffer: a larger one means the
/// host skipped wasmvisor_reserve, and the instance aborts.
fn checked_input_len(in_len: u32) -> usize {
    let cap = INPUT.with(|i| i.borrow().len());
    if in_len as usize > cap {
        host::abort(b"input larger than input buffer");
    }
    in_len as usize
}

fn output(st: Status, out: Cow<'static, [u8]>) -> u32 {
    with(|g| g.set_out(st, out))
}

fn error_output(e: Error) -> u32 {
    output(e.status, Cow::Owned(e.message))
}

extern "C" {
    #[cfg(target_arch = "wasm32")]
    fn __wasm_call_ctors();
}

/// The WASI reactor initialiser: runs the C library's constructors (once; otherwise the linker
/// wraps every export in them) and installs the panic hook.
#[no_mangle]
pub extern "C" fn _initialize() {
    #[cfg(target_arch = "wasm32")]
    unsafe {
        __wasm_call_ctors()
    };
    install_panic_hook();
}

/// wasmvisor_init: runs the plugin's `init()` once, fixes the handler list, sets up the stores
/// and returns the control block's address. A second call returns the same address.
#[no_mangle]
pub extern "C" fn wasmvisor_init() -> u32 {
    install_panic_hook();
    if !with(|g| g.init_done) {
        crate::init();
        with(|g| g.finish_init());
    }
    with(|g| addr(&*g.ctrl))
}

/// wasmvisor_reserve: makes the input buffer at least `size` bytes (rounded up to 4 KiB). The
/// old buffer stays if the allocation fails (`STATUS_NO_MEMORY` `out of memory`).
#[no_mangle]
pub extern "C" fn wasmvisor_reserve(size: u32) -> u32 {
    let size = size as usize;
    let grown = INPUT.with(|i| {
        let mut i = i.borrow_mut();
        if size <= i.len() {
            return Some(None);
        }
        let n = size.checked_add(4095)? & !4095;
        let mut b = Vec::new();
        b.try_reserve_exact(n).ok()?;
        b.resize(n, 0);
        *i = b;
        Some(Some((addr_of(&i), n as u32)))
    });
    match grown {
        None => output(Status::NoMemory, Cow::Borrowed(b"out of memory")),
        Some(new) => with(|g| {
            if let Some((ptr, cap)) = new {
                g.ctrl.in_ptr = ptr;
                g.ctrl.in_cap = cap;
            }
            g.set_out(Status::Ok, Cow::Borrowed(&[]))
        }),
    }
}

/// wasmvisor_call: runs handler number `handler` on the `in_len` input bytes. An unknown
/// number answers `STATUS_UNKNOWN_HANDLER` with an empty message.
#[no_mangle]
pub extern "C" fn wasmvisor_call(handler: u32, in_len: u32) -> u32 {
    let n = checked_input_len(in_len);
    let h = with(|g| g.handlers.get(handler as usize).map(|(_, h)| h.clone()));
    let h = match h {
        Some(h) => h,
        None => return output(Status::UnknownHandler, Cow::Borrowed(&[])),
    };
    let result = INPUT.with(|i| h(&i.borrow()[..n]));
    match result {
        Ok(out) => output(Status::Ok, Cow::Owned(out)),
        Err(e) => error_output(e),
    }
}

/// wasmvisor_configure: checks the encoding, decides whether the config changed (byte-wise;
/// "no config yet" compares as the empty config), runs the change callbacks and applies it
/// unless one of them returns an error.
#[no_mangle]
pub extern "C" fn wasmvisor_configure(in_len: u32) -> u32 {
    let n = checked_input_len(in_len);
    let (old, callbacks) = with(|g| (g.config.clone(), g.on_config.clone()));
    let parsed = INPUT.with(|i| {
        let i = i.borrow();
        let b = &i[..n];
        let entries = parse_config(b)?;
        let current = old.as_ref().map_or(EMPTY_CONFIG, |c| &c.0.raw[..]);
        Some(if b == current { None } else { Some(Config(Rc::new(ConfigData { raw: b.to_vec(), entries }))) })
    });
    let new = match parsed {
        None => return output(Status::ConfigRejected, Cow::Borrowed(b"malformed config")),
        Some(None) => {
            // Unchanged; a first empty config still becomes the applied one.
            return with(|g| {
                if g.config.is_none() {
                    g.config = Some(Config::empty());
                    g.sync();
                }
                g.set_out(Status::Ok, Cow::Borrowed(&[]))
            });
        }
        Some(Some(c)) => c,
    };
    let old = old.unwrap_or_else(Config::empty);
    for cb in &callbacks {
        if let Err(e) = cb(&old, &new) {
            return output(Status::ConfigRejected, Cow::Owned(e.message));
        }
    }
    with(|g| {
        g.config = Some(new);
        g.sync();
        g.set_out(Status::Ok, Cow::Borrowed(&[]))
    })
}

/// wasmvisor_deliver: decodes `u32 topic_len, topic, payload` and hands it to the event
/// callbacks.
#[no_mangle]
pub extern "C" fn wasmvisor_deliver(in_len: u32) -> u32 {
    let n = checked_input_len(in_len);
    let callbacks = with(|g| g.on_event.clone());
    let result = INPUT.with(|i| {
        let i = i.borrow();
        let b = &i[..n];
        if b.len() < 4 {
            return Err(Error::invalid_input("bad delivery"));
        }
        let tlen = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if tlen > b.len() - 4 {
            return Err(Error::invalid_input("bad delivery"));
        }
        if callbacks.is_empty() {
            return Err(Error::new("no event callback registered"));
        }
        let (topic, data) = b[4..].split_at(tlen);
        for cb in &callbacks {
            cb(topic, data)?;
        }
        Ok(())
    });
    match result {
        Ok(()) => output(Status::Ok, Cow::Borrowed(&[])),
        Err(e) => error_output(e),
    }
}

/// Native test driver (any target but wasm32): runs the real export code paths as the host
/// would, by handler name, and returns the status and output as a `Result`. `init()` runs on
/// first use.
#[cfg(not(target_arch = "wasm32"))]
pub mod native {
    use super::*;

    fn status_of(st: u32) -> Status {
        match st {
            0 => Status::Ok,
            1 => Status::Error,
            2 => Status::UnknownHandler,
            3 => Status::InvalidInput,
            4 => Status::ConfigRejected,
            _ => Status::NoMemory,
        }
    }

    fn run(input: &[u8], export: impl FnOnce(u32) -> u32) -> Result<Vec<u8>, Error> {
        wasmvisor_init();
        let mut st = wasmvisor_reserve(input.len() as u32);
        if st == 0 {
            INPUT.with(|i| i.borrow_mut()[..input.len()].copy_from_slice(input));
            st = export(input.len() as u32);
        }
        let out = with(|g| g.out.to_vec());
        match status_of(st) {
            Status::Ok => Ok(out),
            status => Err(Error { status, message: out }),
        }
    }

    /// Calls the handler registered as `name`, as `wasmvisor_call` does.
    pub fn call(name: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        wasmvisor_init();
        let h = with(|g| g.handlers.iter().position(|(n, _)| n == name)).unwrap_or(usize::MAX);
        run(input, |n| wasmvisor_call(h as u32, n))
    }

    /// Pushes `config`, as `wasmvisor_configure` does.
    pub fn configure(config: &Config) -> Result<(), Error> {
        run(config.encoded(), |n| wasmvisor_configure(n)).map(|_| ())
    }

    /// Offers `f` as the host function `name` to the native stand-in host (granted), so that a
    /// plugin's unit tests can exercise `host_call`. `Err(msg)` is a failure with
    /// `Status::Error`. Setting a name again replaces its function.
    pub fn set_host_func(name: &str, f: impl Fn(&[u8]) -> Result<Vec<u8>, Vec<u8>> + 'static) {
        let f: host::HostFn = Rc::new(f);
        host::FNS.with(|fns| {
            let mut fns = fns.borrow_mut();
            match fns.iter_mut().find(|(n, _)| n == name) {
                Some(e) => e.1 = f,
                None => fns.push((name.to_string(), f)),
            }
        })
    }

    /// Delivers a bus event, as `wasmvisor_deliver` does.
    pub fn deliver(topic: &[u8], data: &[u8]) -> Result<(), Error> {
        let mut b = (topic.len() as u32).to_le_bytes().to_vec();
        b.extend_from_slice(topic);
        b.extend_from_slice(data);
        run(&b, |n| wasmvisor_deliver(n)).map(|_| ())
    }
}

// ---------------------------------------------------------------------------------------------
// Panics
// ---------------------------------------------------------------------------------------------

/// Installs (once) the hook that turns a panic into a call to the abort import with Rust's
/// panic message. The message is formatted into a fixed buffer, so that a panic needs no
/// allocation.
fn install_panic_hook() {
    if cfg!(not(target_arch = "wasm32")) {
        return; // natively, panics stay panics (the stand-in abort panics)
    }
    use std::sync::atomic::AtomicBool;
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if INSTALLED.swap(true, Ordering::Relaxed) {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        use std::fmt::Write;
        let mut buf = FixedBuf { b: [0; 512], n: 0 };
        let _ = write!(buf, "{}", info);
        host::abort(&buf.b[..buf.n]);
    }));
}

/// A fmt::Write into a fixed array that truncates at a character boundary.
struct FixedBuf {
    b: [u8; 512],
    n: usize,
}

impl fmt::Write for FixedBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.b.len() - self.n;
        let mut k = s.len().min(room);
        while !s.is_char_boundary(k) {
            k -= 1;
        }
        self.b[self.n..self.n + k].copy_from_slice(&s.as_bytes()[..k]);
        self.n += k;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Imports
// ---------------------------------------------------------------------------------------------

#[cfg(target_arch = "wasm32")]
mod host {
    #[link(wasm_import_module = "wasmvisor")]
    extern "C" {
        // rustc gives imports with an explicit module their own symbol names, so these do not
        // clash with libc's `log` and `abort`.
        #[link_name = "log"]
        fn host_log(level: u32, ptr: *const u8, len: u32);
        #[link_name = "publish"]
        fn host_publish(topic_ptr: *const u8, topic_len: u32, data_ptr: *const u8, data_len: u32) -> u32;
        #[link_name = "abort"]
        fn host_abort(ptr: *const u8, len: u32);
        #[link_name = "host_fn"]
        fn import_host_fn(name_ptr: *const u8, name_len: u32) -> i32;
        #[link_name = "host_call"]
        fn import_host_call(h: i32, in_ptr: *const u8, in_len: u32) -> u64;
        #[link_name = "host_result"]
        fn import_host_result(dst_ptr: *mut u8, dst_len: u32) -> i32;
    }

    pub fn log(level: u32, msg: &[u8]) {
        unsafe { host_log(level, msg.as_ptr(), msg.len() as u32) }
    }

    pub fn publish(topic: &[u8], data: &[u8]) -> u32 {
        unsafe { host_publish(topic.as_ptr(), topic.len() as u32, data.as_ptr(), data.len() as u32) }
    }

    pub fn abort(msg: &[u8]) -> ! {
        unsafe { host_abort(msg.as_ptr(), msg.len() as u32) };
        std::process::abort() // not reached: the import traps
    }

    pub fn host_fn(name: &[u8]) -> i32 {
        unsafe { import_host_fn(name.as_ptr(), name.len() as u32) }
    }

    pub fn host_call(h: i32, input: &[u8]) -> u64 {
        unsafe { import_host_call(h, input.as_ptr(), input.len() as u32) }
    }

    pub fn host_result(dst: &mut [u8]) -> i32 {
        unsafe { import_host_result(dst.as_mut_ptr(), dst.len() as u32) }
    }
}

/// Stand-ins for native builds (unit tests of a plugin's logic).
#[cfg(not(target_arch = "wasm32"))]
mod host {
    pub fn log(level: u32, msg: &[u8]) {
        eprintln!("wasmvisor log {}: {}", level, String::from_utf8_lossy(msg));
    }

    pub fn publish(_topic: &[u8], _data: &[u8]) -> u32 {
        1 // dropped: there is no bus
    }

    pub fn abort(msg: &[u8]) -> ! {
        panic!("wasmvisor abort: {}", String::from_utf8_lossy(msg))
    }

    pub type HostFn = std::rc::Rc<dyn Fn(&[u8]) -> Result<Vec<u8>, Vec<u8>>>;

    thread_local! {
        // The host functions of native::set_host_func, and the pending output.
        pub static FNS: std::cell::RefCell<Vec<(String, HostFn)>> = std::cell::RefCell::new(Vec::new());
        static PENDING: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::new());
    }

    pub fn host_fn(name: &[u8]) -> i32 {
        FNS.with(|f| f.borrow().iter().position(|(n, _)| n.as_bytes() == name).map_or(-1, |i| i as i32))
    }

    pub fn host_call(h: i32, input: &[u8]) -> u64 {
        let f = FNS.with(|f| f.borrow().get(h as usize).map(|(_, f)| f.clone()));
        let (status, out) = match f {
            None => (2u64, format!("no host function with handle {}", h).into_bytes()),
            Some(f) => match f(input) {
                Ok(out) => (0, out),
                Err(msg) => (1, msg),
            },
        };
        let n = out.len() as u64;
        PENDING.with(|p| *p.borrow_mut() = out);
        status << 32 | n
    }

    pub fn host_result(dst: &mut [u8]) -> i32 {
        PENDING.with(|p| {
            let mut p = p.borrow_mut();
            if dst.len() < p.len() {
                return -1;
            }
            dst[..p.len()].copy_from_slice(&p);
            let n = p.len() as i32;
            p.clear();
            n
        })
    }
}

impl Config {
    /// The value of `key` as JSON text, for the reader of module `json`: a structured value of
    /// the server config (a map, list, number or bool; CONFIG.md) arrives as its JSON text, a
    /// plain string as itself. `None` when the key is absent. The text is not checked here:
    /// parse it with `json::Reader::new(v)`, which reports malformed text as an error.
    pub fn get_json(&self, key: impl AsRef<[u8]>) -> Option<&[u8]> {
        self.get_bytes(key)
    }
}

/// A JSON reader and writer with the standard library only (RFC 8259).
///
/// `Reader` is a pull parser over a byte slice: `next` returns one `Token` at a time, without
/// allocating; strings are slices of the input, unescaped only when asked (`Str::unescape`).
/// Nesting is bounded by `MAX_DEPTH`; malformed input is an `Error` with its byte offset,
/// never a panic. `Writer` builds compact JSON; strings are escaped as Go's encoding/json
/// escapes them (`<`, `>`, `&`, U+2028 and U+2029 too; invalid UTF-8 becomes U+FFFD).
///
/// ```ignore
/// let mut r = json::Reader::new(br#"{"limit": 5, "tags": ["a"]}"#);
/// let mut limit = 0;
/// r.begin_object()?;
/// while let Some(key) = r.key()? {
///     if key.eq_str("limit") { limit = r.i64()?; } else { r.skip()?; }
/// }
/// let mut w = json::Writer::new();
/// w.begin_object(); w.key("limit"); w.i64(limit); w.end_object();
/// let out: Vec<u8> = w.finish()?; // {"limit":5}
/// ```
pub mod json {
    use std::fmt;

    /// The deepest nesting of arrays and objects a `Reader` or `Writer` accepts.
    pub const MAX_DEPTH: usize = 64;

    /// What went wrong.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum ErrorKind {
        /// The input ended inside a value.
        UnexpectedEnd,
        /// A byte that cannot come here.
        UnexpectedByte,
        /// A bad escape in a string (`\x`, `\u12`).
        BadEscape,
        /// A control character (below 0x20) inside a string.
        ControlInString,
        /// A malformed number (`01`, `1.`, `-`, `1e`).
        BadNumber,
        /// Nesting deeper than `MAX_DEPTH`.
        TooDeep,
        /// Bytes after the top-level value.
        TrailingData,
        /// A value of another type than the one asked for (`Reader::i64` on a string).
        WrongType,
        /// A number out of the asked type's range.
        OutOfRange,
        /// A `Writer` used out of order (a value where a key must come, an unclosed object),
        /// or a non-finite float.
        BadWrite,
    }

    /// A JSON error: its kind and the byte offset in the input where it was found (0 for a
    /// `Writer`'s).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Error {
        pub kind: ErrorKind,
        pub offset: usize,
    }

    impl fmt::Display for Error {
        fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
            let what = match self.kind {
                ErrorKind::UnexpectedEnd => "unexpected end",
                ErrorKind::UnexpectedByte => "unexpected byte",
                ErrorKind::BadEscape => "bad escape",
                ErrorKind::ControlInString => "control character in string",
                ErrorKind::BadNumber => "bad number",
                ErrorKind::TooDeep => "too deep",
                ErrorKind::TrailingData => "trailing data",
                ErrorKind::WrongType => "wrong type",
                ErrorKind::OutOfRange => "out of range",
                ErrorKind::BadWrite => "bad write",
            };
            write!(f, "json: {} at offset {}", what, self.offset)
        }
    }

    impl From<Error> for super::Error {
        /// An invalid-input error whose message is the JSON error's text.
        fn from(e: Error) -> super::Error {
            super::Error::invalid_input(e.to_string())
        }
    }

    /// A string token: the bytes between the quotes, escapes still in.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Str<'a> {
        raw: &'a [u8],
        escaped: bool,
    }

    impl<'a> Str<'a> {
        /// The bytes between the quotes, as they are in the input.
        pub fn raw(&self) -> &'a [u8] {
            self.raw
        }

        /// The string without escapes, borrowed when it has none. A `\u` escape of a lone
        /// surrogate becomes U+FFFD, as in Go's encoding/json.
        pub fn unescape(&self) -> std::borrow::Cow<'a, [u8]> {
            if !self.escaped {
                return std::borrow::Cow::Borrowed(self.raw);
            }
            let mut out = Vec::with_capacity(self.raw.len());
            self.unescape_into(&mut out);
            std::borrow::Cow::Owned(out)
        }

        /// Appends the string without escapes to `out`.
        pub fn unescape_into(&self, out: &mut Vec<u8>) {
            let b = self.raw;
            let mut i = 0;
            while i < b.len() {
                if b[i] != b'\\' {
                    out.push(b[i]);
                    i += 1;
                    continue;
                }
                // The reader checked every escape: the bytes are there and well-formed.
                let c = b[i + 1];
                i += 2;
                let ch = match c {
                    b'n' => '\n',
                    b't' => '\t',
                    b'r' => '\r',
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'u' => {
                        let hi = hex4(&b[i..i + 4]).unwrap_or(0xFFFD);
                        i += 4;
                        let mut cp = hi;
                        if (0xD800..0xDC00).contains(&hi) {
                            cp = 0xFFFD;
                            if i + 6 <= b.len() && b[i] == b'\\' && b[i + 1] == b'u' {
                                if let Some(lo) = hex4(&b[i + 2..i + 6]) {
                                    if (0xDC00..0xE000).contains(&lo) {
                                        cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                                        i += 6;
                                    }
                                }
                            }
                        }
                        char::from_u32(cp).unwrap_or('\u{FFFD}')
                    }
                    other => other as char, // '"', '\\', '/'
                };
                let mut tmp = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
            }
        }

        /// Whether the unescaped string equals `s`, without allocating when it has no escapes.
        pub fn eq_str(&self, s: &str) -> bool {
            if !self.escaped {
                return self.raw == s.as_bytes();
            }
            *self.unescape() == *s.as_bytes()
        }
    }

    fn hex4(b: &[u8]) -> Option<u32> {
        let mut v = 0u32;
        for &c in b.iter().take(4) {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return None,
            };
            v = v << 4 | d as u32;
        }
        if b.len() < 4 {
            return None;
        }
        Some(v)
    }

    /// One token of the input.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Token<'a> {
        BeginObject,
        EndObject,
        BeginArray,
        EndArray,
        /// An object's key (the `:` after it is consumed).
        Key(Str<'a>),
        String(Str<'a>),
        /// A number's text, checked against the JSON grammar.
        Number(&'a [u8]),
        Bool(bool),
        Null,
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Expect {
        Value,      // the top-level value, or a value after ':' or ','
        ValueOrEnd, // after '['
        KeyOrEnd,   // after '{'
        Key,        // after ',' in an object
        CommaOrEnd, // after a value inside a container
        Done,       // after the top-level value
    }

    /// A pull parser over one JSON text. It allocates nothing; the tokens borrow the input.
    pub struct Reader<'a> {
        b: &'a [u8],
        pos: usize,
        depth: usize,
        objects: u64, // bit d set: the container at depth d+1 is an object
        expect: Expect,
    }

    impl<'a> Reader<'a> {
        pub fn new(input: &'a [u8]) -> Reader<'a> {
            Reader { b: input, pos: 0, depth: 0, objects: 0, expect: Expect::Value }
        }

        /// The byte offset of the next token.
        pub fn offset(&self) -> usize {
            self.pos
        }

        /// The nesting depth: 0 at the top level, 1 inside one array or object, …
        pub fn depth(&self) -> usize {
            self.depth
        }

        fn err(&self, kind: ErrorKind) -> Error {
            Error { kind, offset: self.pos }
        }

        fn ws(&mut self) {
            while self.pos < self.b.len() && matches!(self.b[self.pos], b' ' | b'\t' | b'\n' | b'\r') {
                self.pos += 1;
            }
        }

        fn in_object(&self) -> bool {
            self.depth > 0 && self.objects >> (self.depth - 1) & 1 == 1
        }

        /// The next token; `Ok(None)` after the top-level value when only whitespace follows.
        pub fn next(&mut self) -> Result<Option<Token<'a>>, Error> {
            self.ws();
            if self.expect == Expect::Done {
                return if self.pos == self.b.len() { Ok(None) } else { Err(self.err(ErrorKind::TrailingData)) };
            }
            let c = match self.b.get(self.pos) {
                Some(&c) => c,
                None => return Err(self.err(ErrorKind::UnexpectedEnd)),
            };
            match self.expect {
                Expect::CommaOrEnd => {
                    let close = if self.in_object() { b'}' } else { b']' };
                    if c == close {
                        return Ok(Some(self.close()));
                    }
                    if c != b',' {
                        return Err(self.err(ErrorKind::UnexpectedByte));
                    }
                    self.pos += 1;
                    self.expect = if self.in_object() { Expect::Key } else { Expect::Value };
                    self.next()
                }
                Expect::KeyOrEnd | Expect::Key => {
                    if c == b'}' && self.expect == Expect::KeyOrEnd {
                        return Ok(Some(self.close()));
                    }
                    if c != b'"' {
                        return Err(self.err(ErrorKind::UnexpectedByte));
                    }
                    let s = self.string()?;
                    self.ws();
                    if self.pos == self.b.len() {
                        return Err(self.err(ErrorKind::UnexpectedEnd));
                    }
                    if self.b[self.pos] != b':' {
                        return Err(self.err(ErrorKind::UnexpectedByte));
                    }
                    self.pos += 1;
                    self.expect = Expect::Value;
                    Ok(Some(Token::Key(s)))
                }
                Expect::ValueOrEnd if c == b']' => Ok(Some(self.close())),
                _ => self.value(c).map(Some),
            }
        }

        fn close(&mut self) -> Token<'a> {
            let obj = self.in_object();
            self.pos += 1;
            self.depth -= 1;
            self.after_value();
            if obj {
                Token::EndObject
            } else {
                Token::EndArray
            }
        }

        fn after_value(&mut self) {
            self.expect = if self.depth == 0 { Expect::Done } else { Expect::CommaOrEnd };
        }

        fn open(&mut self, object: bool) -> Result<Token<'a>, Error> {
            if self.depth == MAX_DEPTH {
                return Err(self.err(ErrorKind::TooDeep));
            }
            self.pos += 1;
            if object {
                self.objects |= 1 << self.depth;
            } else {
                self.objects &= !(1 << self.depth);
            }
            self.depth += 1;
            self.expect = if object { Expect::KeyOrEnd } else { Expect::ValueOrEnd };
            Ok(if object { Token::BeginObject } else { Token::BeginArray })
        }

        fn value(&mut self, c: u8) -> Result<Token<'a>, Error> {
            let t = match c {
                b'{' => return self.open(true),
                b'[' => return self.open(false),
                b'"' => Token::String(self.string()?),
                b't' => self.literal(b"true", Token::Bool(true))?,
                b'f' => self.literal(b"false", Token::Bool(false))?,
                b'n' => self.literal(b"null", Token::Null)?,
                b'-' | b'0'..=b'9' => Token::Number(self.number()?),
                _ => return Err(self.err(ErrorKind::UnexpectedByte)),
            };
            self.after_value();
            Ok(t)
        }

        fn literal(&mut self, word: &[u8], t: Token<'a>) -> Result<Token<'a>, Error> {
            for &w in word {
                match self.b.get(self.pos) {
                    None => return Err(self.err(ErrorKind::UnexpectedEnd)),
                    Some(&c) if c != w => return Err(self.err(ErrorKind::UnexpectedByte)),
                    _ => self.pos += 1,
                }
            }
            Ok(t)
        }

        fn digits(&mut self) -> usize {
            let start = self.pos;
            while self.pos < self.b.len() && self.b[self.pos].is_ascii_digit() {
                self.pos += 1;
            }
            self.pos - start
        }

        fn number(&mut self) -> Result<&'a [u8], Error> {
            let start = self.pos;
            if self.b[self.pos] == b'-' {
                self.pos += 1;
            }
            let first = self.pos;
            let n = self.digits();
            if n == 0 || (n > 1 && self.b[first] == b'0') {
                return Err(Error { kind: ErrorKind::BadNumber, offset: start });
            }
            if self.b.get(self.pos) == Some(&b'.') {
                self.pos += 1;
                if self.digits() == 0 {
                    return Err(Error { kind: ErrorKind::BadNumber, offset: start });
                }
            }
            if matches!(self.b.get(self.pos), Some(b'e') | Some(b'E')) {
                self.pos += 1;
                if matches!(self.b.get(self.pos), Some(b'+') | Some(b'-')) {
                    self.pos += 1;
                }
                if self.digits() == 0 {
                    return Err(Error { kind: ErrorKind::BadNumber, offset: start });
                }
            }
            Ok(&self.b[start..self.pos])
        }

        fn string(&mut self) -> Result<Str<'a>, Error> {
            self.pos += 1; // the opening quote
            let start = self.pos;
            let mut escaped = false;
            loop {
                let c = match self.b.get(self.pos) {
                    Some(&c) => c,
                    None => return Err(self.err(ErrorKind::UnexpectedEnd)),
                };
                match c {
                    b'"' => break,
                    b'\\' => {
                        escaped = true;
                        let e = match self.b.get(self.pos + 1) {
                            Some(&e) => e,
                            None => return Err(Error { kind: ErrorKind::UnexpectedEnd, offset: self.b.len() }),
                        };
                        match e {
                            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.pos += 2,
                            b'u' => {
                                for k in self.pos + 2..self.pos + 6 {
                                    match self.b.get(k) {
                                        None => return Err(Error { kind: ErrorKind::UnexpectedEnd, offset: k }),
                                        Some(h) if !h.is_ascii_hexdigit() => return Err(self.err(ErrorKind::BadEscape)),
                                        _ => {}
                                    }
                                }
                                self.pos += 6;
                            }
                            _ => return Err(self.err(ErrorKind::BadEscape)),
                        }
                    }
                    0..=0x1f => return Err(self.err(ErrorKind::ControlInString)),
                    _ => self.pos += 1,
                }
            }
            let raw = &self.b[start..self.pos];
            self.pos += 1; // the closing quote
            Ok(Str { raw, escaped })
        }

        /// Skips the value that comes next (a whole array or object with its contents).
        pub fn skip(&mut self) -> Result<(), Error> {
            let base = self.depth;
            loop {
                match self.next()? {
                    None => return Err(self.err(ErrorKind::UnexpectedEnd)),
                    Some(Token::Key(_)) => {}
                    Some(_) if self.depth == base => return Ok(()),
                    Some(_) => {}
                }
            }
        }

        fn want(&mut self, want: Token<'static>) -> Result<(), Error> {
            let at = self.pos;
            match self.next()? {
                Some(t) if t == want => Ok(()),
                _ => Err(Error { kind: ErrorKind::WrongType, offset: at }),
            }
        }

        /// Consumes `{`.
        pub fn begin_object(&mut self) -> Result<(), Error> {
            self.want(Token::BeginObject)
        }

        /// Consumes `[`.
        pub fn begin_array(&mut self) -> Result<(), Error> {
            self.want(Token::BeginArray)
        }

        /// Inside an object: the next key, or `None` after consuming the closing `}`.
        pub fn key(&mut self) -> Result<Option<Str<'a>>, Error> {
            let at = self.pos;
            match self.next()? {
                Some(Token::Key(k)) => Ok(Some(k)),
                Some(Token::EndObject) => Ok(None),
                _ => Err(Error { kind: ErrorKind::WrongType, offset: at }),
            }
        }

        /// Inside an array: whether another element follows; `false` after consuming `]`.
        pub fn more(&mut self) -> Result<bool, Error> {
            self.ws();
            if self.expect == Expect::CommaOrEnd && !self.in_object() && self.b.get(self.pos) == Some(&b',') {
                self.pos += 1;
                self.expect = Expect::Value;
                return Ok(true);
            }
            if matches!(self.expect, Expect::ValueOrEnd | Expect::CommaOrEnd) && !self.in_object() {
                if self.b.get(self.pos) == Some(&b']') {
                    self.close();
                    return Ok(false);
                }
                if self.expect == Expect::ValueOrEnd {
                    return Ok(true);
                }
            }
            match self.b.get(self.pos) {
                None => Err(self.err(ErrorKind::UnexpectedEnd)),
                Some(_) => Err(self.err(ErrorKind::UnexpectedByte)),
            }
        }

        /// The next value as a string (unescaped).
        pub fn str(&mut self) -> Result<Str<'a>, Error> {
            let at = self.pos;
            match self.next()? {
                Some(Token::String(s)) => Ok(s),
                _ => Err(Error { kind: ErrorKind::WrongType, offset: at }),
            }
        }

        /// The next value as a number's text.
        pub fn number_text(&mut self) -> Result<&'a [u8], Error> {
            let at = self.pos;
            match self.next()? {
                Some(Token::Number(n)) => Ok(n),
                _ => Err(Error { kind: ErrorKind::WrongType, offset: at }),
            }
        }

        /// The next value as an integer: a number without fraction or exponent in i64's range.
        pub fn i64(&mut self) -> Result<i64, Error> {
            let at = self.pos;
            let n = self.number_text()?;
            std::str::from_utf8(n)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or(Error { kind: ErrorKind::OutOfRange, offset: at })
        }

        /// The next value as a float (the nearest f64).
        pub fn f64(&mut self) -> Result<f64, Error> {
            let at = self.pos;
            let n = self.number_text()?;
            match std::str::from_utf8(n).ok().and_then(|s| s.parse::<f64>().ok()) {
                Some(v) if v.is_finite() => Ok(v),
                _ => Err(Error { kind: ErrorKind::OutOfRange, offset: at }),
            }
        }

        /// The next value as a bool.
        pub fn bool(&mut self) -> Result<bool, Error> {
            let at = self.pos;
            match self.next()? {
                Some(Token::Bool(v)) => Ok(v),
                _ => Err(Error { kind: ErrorKind::WrongType, offset: at }),
            }
        }

        /// Checks that nothing but whitespace follows the top-level value.
        pub fn end(&mut self) -> Result<(), Error> {
            match self.next()? {
                None => Ok(()),
                Some(_) => Err(self.err(ErrorKind::UnexpectedByte)),
            }
        }
    }

    /// Builds compact JSON. Misuse (a value where a key must come, unbalanced ends, a
    /// non-finite float, deeper than `MAX_DEPTH`) is remembered and reported by `finish`.
    pub struct Writer {
        out: Vec<u8>,
        depth: usize,
        objects: u64,
        first: bool,    // nothing written yet in the current container
        want_key: bool, // inside an object, before a key
        failed: bool,
        done: bool, // the top-level value is complete
    }

    impl Default for Writer {
        fn default() -> Self {
            Writer::new()
        }
    }

    impl Writer {
        pub fn new() -> Writer {
            Writer { out: Vec::new(), depth: 0, objects: 0, first: true, want_key: false, failed: false, done: false }
        }

        fn in_object(&self) -> bool {
            self.depth > 0 && self.objects >> (self.depth - 1) & 1 == 1
        }

        // before a value: the comma, and the checks.
        fn pre(&mut self) -> bool {
            if self.failed || self.done || self.want_key {
                self.failed = true;
                return false;
            }
            if self.depth > 0 && !self.in_object() && !self.first {
                self.out.push(b',');
            }
            self.first = false;
            true
        }

        fn post(&mut self) {
            if self.depth == 0 {
                self.done = true;
            } else if self.in_object() {
                self.want_key = true;
            }
        }

        fn open(&mut self, object: bool, c: u8) {
            if !self.pre() {
                return;
            }
            if self.depth == MAX_DEPTH {
                self.failed = true;
                return;
            }
            if object {
                self.objects |= 1 << self.depth;
            } else {
                self.objects &= !(1 << self.depth);
            }
            self.depth += 1;
            self.out.push(c);
            self.first = true;
            self.want_key = object;
        }

        fn close(&mut self, object: bool, c: u8) {
            if self.failed || self.depth == 0 || self.in_object() != object || (object && !self.want_key) {
                self.failed = true;
                return;
            }
            self.depth -= 1;
            self.out.push(c);
            self.first = false;
            self.want_key = false;
            self.post();
        }

        pub fn begin_object(&mut self) {
            self.open(true, b'{')
        }

        pub fn end_object(&mut self) {
            self.close(true, b'}')
        }

        pub fn begin_array(&mut self) {
            self.open(false, b'[')
        }

        pub fn end_array(&mut self) {
            self.close(false, b']')
        }

        /// An object's key (escaped like a string).
        pub fn key(&mut self, k: impl AsRef<[u8]>) {
            if self.failed || !self.want_key {
                self.failed = true;
                return;
            }
            if !self.first {
                self.out.push(b',');
            }
            self.first = false;
            escape(&mut self.out, k.as_ref());
            self.out.push(b':');
            self.want_key = false;
        }

        /// A string value: bytes, UTF-8 expected (invalid sequences become U+FFFD).
        pub fn string(&mut self, s: impl AsRef<[u8]>) {
            if self.pre() {
                escape(&mut self.out, s.as_ref());
                self.post();
            }
        }

        pub fn i64(&mut self, v: i64) {
            if self.pre() {
                self.out.extend_from_slice(v.to_string().as_bytes());
                self.post();
            }
        }

        pub fn u64(&mut self, v: u64) {
            if self.pre() {
                self.out.extend_from_slice(v.to_string().as_bytes());
                self.post();
            }
        }

        /// A float in its shortest round-trip form; NaN and the infinities are an error.
        pub fn f64(&mut self, v: f64) {
            if !v.is_finite() {
                self.failed = true;
                return;
            }
            if self.pre() {
                self.out.extend_from_slice(format!("{}", v).as_bytes());
                self.post();
            }
        }

        /// A number given as text, which must match the JSON grammar (as a reader's `Number`
        /// token does).
        pub fn number_text(&mut self, n: &[u8]) {
            let mut r = Reader::new(n);
            let ok = matches!(r.next(), Ok(Some(Token::Number(_)))) && r.end().is_ok();
            if !ok {
                self.failed = true;
                return;
            }
            if self.pre() {
                self.out.extend_from_slice(n);
                self.post();
            }
        }

        pub fn bool(&mut self, v: bool) {
            if self.pre() {
                self.out.extend_from_slice(if v { b"true" } else { b"false" });
                self.post();
            }
        }

        pub fn null(&mut self) {
            if self.pre() {
                self.out.extend_from_slice(b"null");
                self.post();
            }
        }

        /// The JSON text, or an error when the writer was misused or the value is incomplete.
        pub fn finish(self) -> Result<Vec<u8>, Error> {
            if self.failed || !self.done {
                return Err(Error { kind: ErrorKind::BadWrite, offset: 0 });
            }
            Ok(self.out)
        }
    }

    const HEX: &[u8; 16] = b"0123456789abcdef";

    /// Appends `s` as a quoted JSON string, escaped as Go's encoding/json escapes it.
    pub fn escape(out: &mut Vec<u8>, s: &[u8]) {
        out.push(b'"');
        let mut i = 0;
        while i < s.len() {
            let c = s[i];
            if c < 0x80 {
                match c {
                    b'"' => out.extend_from_slice(b"\\\""),
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    0x08 => out.extend_from_slice(b"\\b"),
                    0x0c => out.extend_from_slice(b"\\f"),
                    0..=0x1f | b'<' | b'>' | b'&' => {
                        out.extend_from_slice(b"\\u00");
                        out.push(HEX[(c >> 4) as usize]);
                        out.push(HEX[(c & 15) as usize]);
                    }
                    _ => out.push(c),
                }
                i += 1;
                continue;
            }
            let n = utf8_len(&s[i..]);
            if n == 0 {
                out.extend_from_slice(b"\\ufffd");
                i += 1;
                continue;
            }
            if n == 3 && s[i] == 0xE2 && s[i + 1] == 0x80 && (s[i + 2] == 0xA8 || s[i + 2] == 0xA9) {
                out.extend_from_slice(if s[i + 2] == 0xA8 { b"\\u2028" } else { b"\\u2029" });
            } else {
                out.extend_from_slice(&s[i..i + n]);
            }
            i += n;
        }
        out.push(b'"');
    }

    /// The length of the valid UTF-8 sequence at the start of `s`, or 0.
    fn utf8_len(s: &[u8]) -> usize {
        let n = match s[0] {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return 0,
        };
        if s.len() < n || std::str::from_utf8(&s[..n]).is_err() {
            return 0;
        }
        n
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Reads `input` token by token and writes it back: the reader and writer together.
        fn canon(input: &[u8]) -> Result<Vec<u8>, Error> {
            let mut r = Reader::new(input);
            let mut w = Writer::new();
            while let Some(t) = r.next()? {
                match t {
                    Token::BeginObject => w.begin_object(),
                    Token::EndObject => w.end_object(),
                    Token::BeginArray => w.begin_array(),
                    Token::EndArray => w.end_array(),
                    Token::Key(k) => w.key(k.unescape()),
                    Token::String(s) => w.string(s.unescape()),
                    Token::Number(n) => w.number_text(n),
                    Token::Bool(b) => w.bool(b),
                    Token::Null => w.null(),
                }
            }
            w.finish()
        }

        #[test]
        fn round_trips() {
            let cases: &[(&str, &str)] = &[
                (" {\"a\" : [1, -2.5e3, true, false, null, \"x\"], \"b\": {}} ", r#"{"a":[1,-2.5e3,true,false,null,"x"],"b":{}}"#),
                (r#""\u00e9\ud83d\ude00\n<&>\/""#, "\"\u{e9}\u{1F600}\\n\\u003c\\u0026\\u003e/\""),
                (r#""\ud800x""#, "\"\u{FFFD}x\""),
                ("[]", "[]"),
                ("0", "0"),
            ];
            for (i, o) in cases {
                assert_eq!(String::from_utf8(canon(i.as_bytes()).unwrap()).unwrap(), *o, "{}", i);
            }
        }

        #[test]
        fn errors() {
            let cases: &[(&[u8], ErrorKind)] = &[
                (b"", ErrorKind::UnexpectedEnd),
                (b"[1,]", ErrorKind::UnexpectedByte),
                (b"{\"a\" 1}", ErrorKind::UnexpectedByte),
                (b"01", ErrorKind::BadNumber),
                (b"1.", ErrorKind::BadNumber),
                (b"\"\\x\"", ErrorKind::BadEscape),
                (b"\"\\u12\"", ErrorKind::BadEscape),
                (b"\"a\nb\"", ErrorKind::ControlInString),
                (b"[1] 2", ErrorKind::TrailingData),
                (b"[1}", ErrorKind::UnexpectedByte),
                (b"tru", ErrorKind::UnexpectedEnd),
            ];
            for (i, k) in cases {
                assert_eq!(canon(i).unwrap_err().kind, *k, "{:?}", String::from_utf8_lossy(i));
            }
            let deep = "[".repeat(MAX_DEPTH + 1);
            assert_eq!(canon(deep.as_bytes()).unwrap_err().kind, ErrorKind::TooDeep);
            let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
            assert!(canon(ok.as_bytes()).is_ok());
        }

        #[test]
        fn typed() {
            let mut r = Reader::new(br#"{"n": 5, "f": 1.5, "s": "a\"b", "l": [1, [2], {"x": 3}], "b": true}"#);
            r.begin_object().unwrap();
            let (mut n, mut f, mut s, mut l, mut b) = (0, 0.0, Vec::new(), 0, false);
            while let Some(k) = r.key().unwrap() {
                if k.eq_str("n") {
                    n = r.i64().unwrap();
                } else if k.eq_str("f") {
                    f = r.f64().unwrap();
                } else if k.eq_str("s") {
                    s = r.str().unwrap().unescape().into_owned();
                } else if k.eq_str("l") {
                    r.begin_array().unwrap();
                    while r.more().unwrap() {
                        r.skip().unwrap();
                        l += 1;
                    }
                } else {
                    b = r.bool().unwrap();
                }
            }
            r.end().unwrap();
            assert_eq!((n, f, &s[..], l, b), (5, 1.5, &b"a\"b"[..], 3, true));
            assert_eq!(Reader::new(b"\"x\"").i64().unwrap_err().kind, ErrorKind::WrongType);
            assert_eq!(Reader::new(b"1e400").f64().unwrap_err().kind, ErrorKind::OutOfRange);
            assert_eq!(Reader::new(b"1.5").i64().unwrap_err().kind, ErrorKind::OutOfRange);
        }

        #[test]
        fn writer_misuse() {
            let mut w = Writer::new();
            w.begin_object();
            w.string("no key");
            assert!(w.finish().is_err());
            let mut w = Writer::new();
            w.begin_array();
            assert!(w.finish().is_err());
            let mut w = Writer::new();
            w.f64(f64::NAN);
            assert!(w.finish().is_err());
            let mut w = Writer::new();
            w.begin_object();
            w.key("a");
            w.f64(0.1);
            w.key("b");
            w.begin_array();
            w.u64(u64::MAX);
            w.i64(-1);
            w.end_array();
            w.end_object();
            assert_eq!(w.finish().unwrap(), br#"{"a":0.1,"b":[18446744073709551615,-1]}"#.to_vec());
        }
    }
}
