//! The Rust build of the conformance plugin: exactly the handler list and semantics of the WAT
//! reference plugin (plugins/reference/README.md), on the Rust SDK, so that one conformance
//! table runs against every guest language, plus `host_call` (last): `name\ninput` calls the
//! host function `name`; a denial fails with `denied: <name>`, a failure with
//! `failed: <message>`. Build: `sh plugins/conformance/rust/build.sh`.

#[path = "../../../sdk/rust/wasmvisor.rs"]
mod wasmvisor;

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::os::wasi::io::FromRawFd;
use std::rc::Rc;

use wasmvisor::{Config, Counter, Error, Gauge, HostFuncError, Histogram, Level};

/// The reference's limits: 16 ring slots of 256 bytes, a 256-byte marker, a 4096-byte config.
const EVENT_SLOTS: usize = 16;
const MAX_EVENT_SIZE: usize = 256;
const MARKER_CAP: usize = 256;
const CONFIG_CAP: usize = 4096;

thread_local! {
    /// Blocks allocated by `grow`, kept so that the allocations are never elided or freed.
    static HOARD: RefCell<Vec<Vec<u8>>> = RefCell::new(Vec::new());
}

fn init() {
    wasmvisor::set_event_capacity(EVENT_SLOTS);
    wasmvisor::set_max_event_size(MAX_EVENT_SIZE);
    let requests = Counter::new("requests_total");
    let level = Gauge::new("level");
    let size = Histogram::new("size", &[1.0, 10.0, 100.0, 1000.0]);
    let changes = Rc::new(Cell::new(0u64));
    let marker = Rc::new(RefCell::new(Vec::new()));

    wasmvisor::handle("echo", |input| Ok(input.to_vec()));
    wasmvisor::handle("config_get", |key| match wasmvisor::config().get_bytes(key) {
        Some(v) => Ok(v.to_vec()),
        None => Err("missing key".into()),
    });
    let c = changes.clone();
    wasmvisor::handle("config_changes", move |_| Ok(c.get().to_string().into_bytes()));
    wasmvisor::handle("emit", |input| {
        let (topic, data) = split(input);
        wasmvisor::emit(topic, data);
        Ok(Vec::new())
    });
    wasmvisor::handle("publish", |input| {
        let (topic, data) = split(input);
        Ok(match wasmvisor::publish(topic, data) {
            Ok(()) => b"0".to_vec(),
            Err(wasmvisor::Dropped) => b"1".to_vec(),
        })
    });
    wasmvisor::handle("count", move |input| {
        let n = if input.is_empty() { 1 } else { parse_u64(input).ok_or_else(bad_number)? };
        requests.add(n);
        Ok(Vec::new())
    });
    wasmvisor::handle("gauge", move |input| {
        level.set(parse_i64(input).ok_or_else(bad_number)? as f64);
        Ok(Vec::new())
    });
    wasmvisor::handle("observe", move |input| {
        size.observe(parse_u64(input).ok_or_else(bad_number)? as f64);
        Ok(Vec::new())
    });
    wasmvisor::handle("fail", |input| {
        Err(Error::new(if input.is_empty() { &b"failed"[..] } else { input }))
    });
    wasmvisor::handle("trap", |_| panic!("trap"));
    wasmvisor::handle("loop", |_| spin());
    wasmvisor::handle("grow", |_| grow());
    let m = marker.clone();
    wasmvisor::handle("set", move |input| {
        if input.len() > MARKER_CAP {
            return Err(Error::invalid_input("too long"));
        }
        *m.borrow_mut() = input.to_vec();
        Ok(Vec::new())
    });
    wasmvisor::handle("get", move |_| Ok(marker.borrow().clone()));
    wasmvisor::handle("exit", |input| match parse_u64(input) {
        Some(code) if code <= u32::MAX as u64 => std::process::exit(code as u32 as i32),
        _ => Err(bad_number()),
    });
    wasmvisor::handle("log", |input| {
        wasmvisor::log(Level::Info, input);
        Ok(Vec::new())
    });
    wasmvisor::handle("stdout", |input| {
        // fd 1 itself, unbuffered: std::io::stdout() would buffer a partial line and report
        // success when fd 1 is not open (EBADF).
        let stdout = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(1) });
        match (&*stdout).write_all(input) {
            Ok(()) => Ok(Vec::new()),
            Err(_) => Err("write failed".into()),
        }
    });
    wasmvisor::handle("host_call", |input| {
        let (name, arg) = split(input);
        let name = String::from_utf8_lossy(name);
        match wasmvisor::host_call(&name, arg) {
            Ok(out) => Ok(out),
            Err(HostFuncError::Denied) => Err(Error::new(format!("denied: {}", name))),
            Err(HostFuncError::Failed { message, .. }) => {
                let mut m = b"failed: ".to_vec();
                m.extend_from_slice(&message);
                Err(Error::new(m))
            }
        }
    });

    wasmvisor::on_config_change(move |_old: &Config, new: &Config| {
        if new.get_bytes("reject").is_some() {
            return Err("rejected by plugin".into());
        }
        if new.encoded().len() > CONFIG_CAP {
            return Err("config too large".into());
        }
        changes.set(changes.get() + 1);
        Ok(())
    });
    wasmvisor::on_event(|topic, data| {
        wasmvisor::emit(topic, data);
        Ok(())
    });
}

fn bad_number() -> Error {
    Error::invalid_input("bad number")
}

/// Splits `topic\npayload` at the first newline; without one, all of the input is the topic.
fn split(input: &[u8]) -> (&[u8], &[u8]) {
    match input.iter().position(|&c| c == b'\n') {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &[]),
    }
}

/// Strict unsigned decimal: one or more ASCII digits (leading zeros allowed), at most 2^64-1.
fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |v, &c| {
        if !c.is_ascii_digit() {
            return None;
        }
        v.checked_mul(10)?.checked_add((c - b'0') as u64)
    })
}

/// Strict signed decimal: an optional `-` then what parse_u64 accepts, within the i64 range.
fn parse_i64(s: &[u8]) -> Option<i64> {
    match s.split_first() {
        Some((b'-', digits)) => {
            let m = parse_u64(digits)?;
            if m > 1 << 63 {
                return None;
            }
            Some((m as i64).wrapping_neg()) // 2^63 wraps to exactly -2^63
        }
        _ => {
            let m = parse_u64(s)?;
            if m > i64::MAX as u64 {
                return None;
            }
            Some(m as i64)
        }
    }
}

/// Loops until the host's deadline stops the call. The volatile read is a side effect each
/// time round, so the optimiser must keep the loop.
fn spin() -> ! {
    let x = 0u8;
    loop {
        unsafe { std::ptr::read_volatile(&x) };
    }
}

/// Allocates and keeps 1 MiB blocks until an allocation fails (memory.grow refused at the
/// host's limit), then executes `unreachable`, as the reference does. try_reserve rather than
/// vec!: the default allocation-failure handler would also print to stderr.
fn grow() -> ! {
    const BLOCK: usize = 1 << 20;
    loop {
        let mut block: Vec<u8> = Vec::new();
        if block.try_reserve_exact(BLOCK).is_err() {
            std::arch::wasm32::unreachable();
        }
        unsafe { std::ptr::write_volatile(block.as_mut_ptr().add(BLOCK - 1), 1) };
        HOARD.with(|h| h.borrow_mut().push(block));
    }
}
