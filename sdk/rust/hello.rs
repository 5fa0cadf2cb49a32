//! The smallest wasmvisor plugin in Rust: one handler, `hello`, that answers `hello, <input>`.
//! Build and run it as sdk/rust/README.md says.

#[path = "wasmvisor.rs"]
mod wasmvisor;

/// Called once by the SDK, from wasmvisor_init: register handlers, callbacks and metrics here.
fn init() {
    wasmvisor::handle("hello", |input| {
        let mut out = b"hello, ".to_vec();
        out.extend_from_slice(input);
        Ok(out)
    });
}
