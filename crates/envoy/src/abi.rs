//! The C ABI between Envoy 1.40 and this module: the only `unsafe` code of the workspace.
//!
//! Three parts, top to bottom:
//! 1. Safe handles (`EnvoyFilter`, `EnvoyFilterConfig`, `Scheduler`, `CounterId`, `log`) over
//!    the callbacks Envoy exports, and the trait (`HttpFilterModule`) a filter implements.
//! 2. The hand-written `extern "C"` declarations of exactly the callbacks used, transcribed from
//!    Envoy's `source/extensions/dynamic_modules/abi/abi.h` and each checked present in the
//!    1.40.0 binary's dynamic symbol table (`nm -D`).
//! 3. The event hooks Envoy resolves with `dlsym` (`envoy_dynamic_module_on_*`): thin shims that
//!    call `crate::Module` inside `catch_unwind`, so a panic never unwinds into Envoy (it aborts
//!    the proxy): on the request path it answers a deny (500, "internal error") and is counted.
//!
//! Trust: Envoy is trusted to pass the pointers the ABI documents (live for the hook or callback
//! they are given to). Nothing Envoy hands over is assumed to be UTF-8. Enum values crossing the
//! boundary are plain integers here, never Rust enums, so an unknown value cannot be undefined
//! behaviour.

#![allow(unsafe_code)]
// Each unsafe block documents one operation's contract.
#![warn(
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block
)]

use std::ffi::{c_char, c_void};
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The ABI version Envoy 1.40 was built with (`ENVOY_DYNAMIC_MODULES_ABI_VERSION`). Envoy logs
/// "matched" for it and a "deprecated" warning for anything else (and loads the module anyway),
/// so it must be exactly this string for the Envoy the module is built for.
pub const ABI_VERSION: &str = "v0.2.0";
const ABI_VERSION_C: &[u8] = b"v0.2.0\0";

/// Body of the local reply when a hook panicked.
const PANIC_BODY: &[u8] = b"internal error";
/// `%RESPONSE_CODE_DETAILS%` of that reply.
const PANIC_DETAILS: &str = "certbound_internal_error";

// --- 1. safe side -------------------------------------------------------------------------------

/// What the request-headers hook tells Envoy (`FilterHeadersStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadersStatus {
    /// Pass the request on to the next filter now.
    Continue,
    /// Hold the request: a local reply was sent, or `continue_decoding` will be called later.
    StopIteration,
}

impl HeadersStatus {
    fn to_abi(self) -> u32 {
        match self {
            HeadersStatus::Continue => REQUEST_HEADERS_STATUS_CONTINUE,
            HeadersStatus::StopIteration => REQUEST_HEADERS_STATUS_STOP_ITERATION,
        }
    }
}

/// Log levels of Envoy's `dynamic_modules` logger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    fn to_abi(self) -> u32 {
        match self {
            LogLevel::Debug => LOG_LEVEL_DEBUG,
            LogLevel::Info => LOG_LEVEL_INFO,
            LogLevel::Warn => LOG_LEVEL_WARN,
            LogLevel::Error => LOG_LEVEL_ERROR,
        }
    }
}

/// Writes one line to Envoy's log under the `dynamic_modules` logger id.
pub fn log(level: LogLevel, message: &str) {
    // SAFETY: the buffer borrows `message`, which outlives the call; Envoy copies it.
    unsafe {
        envoy_dynamic_module_callback_log(
            level.to_abi(),
            ModuleBuffer::from_bytes(message.as_bytes()),
        )
    }
}

/// A counter defined at configuration time; incremented per stream with label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterId(usize);

/// The Envoy-side filter configuration, valid only inside `HttpFilterModule::config_new`.
pub struct EnvoyFilterConfig<'a> {
    ptr: *mut c_void,
    _hook: PhantomData<&'a ()>,
}

impl EnvoyFilterConfig<'_> {
    /// Defines a counter `envoy_<metrics_namespace>_<name>{labels}` (no `_total` in 1.40).
    /// `None` when Envoy refuses (e.g. stats creation frozen).
    pub fn define_counter(&self, name: &str, label_names: &[&str]) -> Option<CounterId> {
        let labels: Vec<ModuleBuffer> = label_names
            .iter()
            .map(|l| ModuleBuffer::from_bytes(l.as_bytes()))
            .collect();
        let mut id: usize = 0;
        // SAFETY: `self.ptr` is the config pointer of the running config_new hook; name and
        // labels borrow data that lives across the call; `id` is a valid out pointer.
        let result = unsafe {
            envoy_dynamic_module_callback_http_filter_config_define_counter(
                self.ptr,
                ModuleBuffer::from_bytes(name.as_bytes()),
                labels.as_ptr(),
                labels.len(),
                &mut id,
            )
        };
        (result == METRICS_RESULT_SUCCESS).then_some(CounterId(id))
    }
}

/// The Envoy-side HTTP filter of one stream, valid only inside the hook it was given to.
///
/// Values read from Envoy borrow `&self` and setters take `&mut self`, because Envoy only
/// promises a returned buffer until the end of the hook *or the next setter call*.
pub struct EnvoyFilter<'a> {
    ptr: *mut c_void,
    _hook: PhantomData<&'a ()>,
}

impl<'a> EnvoyFilter<'a> {
    fn new(ptr: *mut c_void) -> Self {
        EnvoyFilter {
            ptr,
            _hook: PhantomData,
        }
    }

    /// Every value of request header `name`, in order.
    pub fn request_header_values(&self, name: &str) -> Vec<&[u8]> {
        let (first, count) = self.request_header_at(name, 0);
        let Some(first) = first else {
            return Vec::new();
        };
        let mut values = Vec::with_capacity(count.max(1));
        values.push(first);
        for index in 1..count {
            if let Some(value) = self.request_header_at(name, index).0 {
                values.push(value);
            }
        }
        values
    }

    /// The first value of request header `name` and how many values it has.
    pub fn request_header(&self, name: &str) -> (Option<&[u8]>, usize) {
        self.request_header_at(name, 0)
    }

    fn request_header_at(&self, name: &str, index: usize) -> (Option<&[u8]>, usize) {
        let mut result = EnvoyBuffer::NULL;
        let mut count: usize = 0;
        // SAFETY: `self.ptr` is the filter of the running hook; the key borrows `name`; both out
        // pointers are valid locals.
        let found = unsafe {
            envoy_dynamic_module_callback_http_get_header(
                self.ptr,
                HEADER_TYPE_REQUEST_HEADER,
                ModuleBuffer::from_bytes(name.as_bytes()),
                &mut result,
                index,
                &mut count,
            )
        };
        if !found || result.ptr.is_null() {
            return (None, count);
        }
        // SAFETY: Envoy owns the value until the end of this hook or the next setter, and a
        // setter needs `&mut self`, which this borrow of `&self` excludes.
        (Some(unsafe { result.as_bytes() }), count)
    }

    /// Sets request header `name` to `value`, replacing every value the client sent.
    pub fn set_request_header(&mut self, name: &str, value: &[u8]) -> bool {
        // SAFETY: filter of the running hook; key and value borrow live data; Envoy copies them.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.ptr,
                HEADER_TYPE_REQUEST_HEADER,
                ModuleBuffer::from_bytes(name.as_bytes()),
                ModuleBuffer::from_bytes(value),
            )
        }
    }

    /// Removes request header `name` (every value). `set_header` with a null value removes.
    pub fn remove_request_header(&mut self, name: &str) -> bool {
        // SAFETY: filter of the running hook; the key borrows `name`; a null value buffer is the
        // documented "remove".
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.ptr,
                HEADER_TYPE_REQUEST_HEADER,
                ModuleBuffer::from_bytes(name.as_bytes()),
                ModuleBuffer::NULL,
            )
        }
    }

    /// Answers the request locally (Envoy's sendLocalReply). The request-headers hook must then
    /// return `HeadersStatus::StopIteration`. `details` shows in `%RESPONSE_CODE_DETAILS%`.
    pub fn send_response(
        &mut self,
        status: u32,
        headers: &[(&str, &[u8])],
        body: &[u8],
        details: &str,
    ) {
        let headers: Vec<ModuleHttpHeader> = headers
            .iter()
            .map(|(name, value)| ModuleHttpHeader {
                key_ptr: name.as_ptr().cast(),
                key_length: name.len(),
                value_ptr: value.as_ptr().cast(),
                value_length: value.len(),
            })
            .collect();
        // SAFETY: filter of the running hook; the header array, body and details borrow data
        // that outlives the call, and Envoy copies them into the reply.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.ptr,
                status,
                headers.as_ptr(),
                headers.len(),
                ModuleBuffer::from_bytes(body),
                ModuleBuffer::from_bytes(details.as_bytes()),
            )
        }
    }

    /// A string attribute of the stream (see `attribute` for the ids used), if Envoy has it.
    pub fn attribute_string(&self, id: AttributeId) -> Option<&[u8]> {
        let mut result = EnvoyBuffer::NULL;
        // SAFETY: filter of the running hook; `result` is a valid out pointer.
        let found = unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_string(
                self.ptr,
                id.0,
                &mut result,
            )
        };
        if !found || result.ptr.is_null() {
            return None;
        }
        // SAFETY: as for headers: valid until the end of the hook or the next setter (`&mut self`).
        Some(unsafe { result.as_bytes() })
    }

    /// The most specific per-route configuration (`DynamicModuleFilterPerRoute` with
    /// `filter_name: certbound`) of this request's route, if its route has one.
    pub fn route_config(&self) -> Option<&'a RouteConfigOf> {
        // SAFETY: filter of the running hook.
        let ptr = unsafe { envoy_dynamic_module_callback_get_most_specific_route_config(self.ptr) };
        // SAFETY: the only pointers Envoy hands back here are the ones
        // on_http_filter_per_route_config_new returned: `Box<RouteConfigOf>`s that Envoy keeps
        // alive (route table) for at least as long as the streams routed with them.
        unsafe { ptr.cast::<RouteConfigOf>().as_ref() }
    }

    /// Sets the string entries of dynamic metadata `namespace` (e.g. for access logs) in one
    /// call: Envoy resolves the namespace and merges once, not once per entry.
    pub fn set_metadata_strings(&mut self, namespace: &str, entries: &[(&str, &str)]) {
        if entries.is_empty() {
            return;
        }
        let pairs: Vec<ModuleKeyValue> = entries
            .iter()
            .map(|(k, v)| ModuleKeyValue {
                key_ptr: k.as_ptr().cast(),
                key_length: k.len(),
                value_ptr: v.as_ptr().cast(),
                value_length: v.len(),
            })
            .collect();
        // SAFETY: filter of the running hook; the namespace and every pair borrow live data for
        // the duration of the call; Envoy copies them.
        unsafe {
            envoy_dynamic_module_callback_http_set_dynamic_metadata_string_batch(
                self.ptr,
                ModuleBuffer::from_bytes(namespace.as_bytes()),
                pairs.as_ptr(),
                pairs.len(),
            )
        }
    }

    /// Resumes a request held with `HeadersStatus::StopIteration` (from `on_scheduled`).
    pub fn continue_decoding(&mut self) {
        // SAFETY: filter of the running hook.
        unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(self.ptr) }
    }

    /// Adds `value` to a counter defined at configuration time; `label_values` must match the
    /// label names it was defined with. False when Envoy refused (unknown id, wrong labels).
    pub fn increment_counter(&self, id: CounterId, label_values: &[&str], value: u64) -> bool {
        let labels: Vec<ModuleBuffer> = label_values
            .iter()
            .map(|l| ModuleBuffer::from_bytes(l.as_bytes()))
            .collect();
        // SAFETY: filter of the running hook; the label array borrows live data.
        let result = unsafe {
            envoy_dynamic_module_callback_http_filter_increment_counter(
                self.ptr,
                id.0,
                labels.as_ptr(),
                labels.len(),
                value,
            )
        };
        result == METRICS_RESULT_SUCCESS
    }

    /// A handle another thread can use to wake this stream on its own worker thread:
    /// `Scheduler::commit(event_id)` makes Envoy call `on_scheduled(event_id)` there.
    pub fn new_scheduler(&self) -> Scheduler {
        // SAFETY: filter of the running hook; Envoy allocates the scheduler, we delete it in Drop.
        let ptr = unsafe { envoy_dynamic_module_callback_http_filter_scheduler_new(self.ptr) };
        Scheduler { ptr }
    }
}

/// The per-route configuration type of the exported module.
pub type RouteConfigOf = <crate::Module as HttpFilterModule>::RouteConfig;

/// Wakes one stream on its worker thread from any thread. Deleted (Envoy's side) on drop.
/// If the stream is gone by then, Envoy drops the event: it holds the filter weakly.
pub struct Scheduler {
    ptr: *mut c_void,
}

// SAFETY: the scheduler exists to be used from foreign threads: commit posts the event to the
// stream's dispatcher, and delete frees an object only this handle refers to.
unsafe impl Send for Scheduler {}

impl Scheduler {
    /// Asks Envoy to call `on_scheduled(event_id)` on the stream's worker thread.
    pub fn commit(&self, event_id: u64) {
        if self.ptr.is_null() {
            return;
        }
        // SAFETY: `ptr` came from scheduler_new and is deleted only in Drop.
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_commit(self.ptr, event_id) }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: `ptr` came from scheduler_new and is deleted exactly once, here.
            unsafe { envoy_dynamic_module_callback_http_filter_scheduler_delete(self.ptr) }
        }
    }
}

/// A string attribute id (`envoy_dynamic_module_type_attribute_id`, a C enum: ordinals count
/// from `RequestPath` = 0 in abi.h's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributeId(u32);

pub mod attribute {
    //! The attribute ids this module reads. Checked against Envoy 1.40 end to end: a wrong
    //! ordinal would silently read another attribute (tests/e2e/test_envoy_module.py).
    use super::AttributeId;

    /// `source.address`: the downstream peer as `ip:port`.
    pub const SOURCE_ADDRESS: AttributeId = AttributeId(24);
    /// `connection.sha256_peer_certificate_digest`: lower-case hex SHA-256 of the DER client
    /// certificate Envoy verified (absent without mTLS).
    pub const SHA256_PEER_CERTIFICATE_DIGEST: AttributeId = AttributeId(38);
}

/// A filter implemented against the safe handles. `crate::Module` names the one exported.
pub trait HttpFilterModule: Sized + 'static {
    /// Shared by every stream of one filter configuration (all worker threads).
    type Config: Send + Sync + 'static;
    /// One per route that carries a per-route config.
    type RouteConfig: Send + Sync + 'static;

    /// `filter_config` arrives as raw bytes (a `StringValue`'s value). `None` makes Envoy
    /// refuse the configuration.
    fn config_new(
        envoy: &EnvoyFilterConfig<'_>,
        filter_name: &[u8],
        filter_config: &[u8],
    ) -> Option<Self::Config>;
    /// A per-route config's raw bytes. `None` makes Envoy refuse the route configuration.
    fn route_config_new(filter_name: &[u8], config: &[u8]) -> Option<Self::RouteConfig>;
    /// The state of one stream.
    fn stream_new(config: &Self::Config) -> Self;
    fn on_request_headers(
        &mut self,
        config: &Self::Config,
        envoy: &mut EnvoyFilter<'_>,
        end_of_stream: bool,
    ) -> HeadersStatus;
    /// An event committed through a `Scheduler`, on the stream's worker thread.
    fn on_scheduled(&mut self, config: &Self::Config, envoy: &mut EnvoyFilter<'_>, event_id: u64);
    /// A hook panicked on the request path and the request was denied: count it.
    fn count_panic(config: &Self::Config, envoy: &EnvoyFilter<'_>);
    /// The request is held until `on_scheduled` decides it. While it is, request body data and
    /// trailers are held too: Envoy would otherwise resume the request on the first body chunk
    /// its body hook lets pass (`FilterDataStatus::Continue` after a headers `StopIteration`),
    /// sending it upstream before any decision.
    fn holds_request(&self) -> bool;
}

// --- 2. foreign declarations --------------------------------------------------------------------

/// `envoy_dynamic_module_type_envoy_buffer` (abi.h, "Common Types"): `{const char* ptr; size_t
/// length;}`, owned by Envoy.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    ptr: *const c_char,
    length: usize,
}

impl EnvoyBuffer {
    const NULL: EnvoyBuffer = EnvoyBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };

    /// # Safety
    /// `ptr` must be null or point to `length` readable bytes that stay valid and unchanged
    /// for `'b`.
    unsafe fn as_bytes<'b>(self) -> &'b [u8] {
        if self.ptr.is_null() || self.length == 0 {
            return &[];
        }
        // SAFETY: non-null and `length` readable bytes for `'b`, per this function's contract.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.length) }
    }
}

/// `envoy_dynamic_module_type_module_buffer` (abi.h, "Common Types"): the same layout, owned
/// by the module.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    ptr: *const c_char,
    length: usize,
}

impl ModuleBuffer {
    const NULL: ModuleBuffer = ModuleBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };

    fn from_bytes(bytes: &[u8]) -> ModuleBuffer {
        ModuleBuffer {
            ptr: bytes.as_ptr().cast(),
            length: bytes.len(),
        }
    }
}

/// `envoy_dynamic_module_type_module_http_header` (abi.h, "Common Types"): `{key_ptr,
/// key_length, value_ptr, value_length}`.
#[repr(C)]
pub struct ModuleHttpHeader {
    key_ptr: *const c_char,
    key_length: usize,
    value_ptr: *const c_char,
    value_length: usize,
}

/// `envoy_dynamic_module_type_module_key_value_pair` (abi.h, "Common Types"): `{key_ptr,
/// key_length, value_ptr, value_length}`, the entries of a metadata batch.
#[repr(C)]
pub struct ModuleKeyValue {
    key_ptr: *const c_char,
    key_length: usize,
    value_ptr: *const c_char,
    value_length: usize,
}

/// `envoy_dynamic_module_type_envoy_http_header`: only passed to hooks this module ignores
/// (callout results), so only its pointer type is needed.
#[repr(C)]
pub struct EnvoyHttpHeader {
    _private: [u8; 0],
}

// envoy_dynamic_module_type_http_header_type: RequestHeader, RequestTrailer, ResponseHeader,
// ResponseTrailer.
const HEADER_TYPE_REQUEST_HEADER: u32 = 0;
// envoy_dynamic_module_type_log_level: Trace, Debug, Info, Warn, Error, Critical, Off.
const LOG_LEVEL_DEBUG: u32 = 1;
const LOG_LEVEL_INFO: u32 = 2;
const LOG_LEVEL_WARN: u32 = 3;
const LOG_LEVEL_ERROR: u32 = 4;
// envoy_dynamic_module_type_metrics_result: Success, MetricNotFound, InvalidLabels, Frozen.
const METRICS_RESULT_SUCCESS: u32 = 0;
// envoy_dynamic_module_type_on_http_filter_request_headers_status: Continue, StopIteration,
// ContinueAndDontEndStream, StopAllIterationAndBuffer, StopAllIterationAndWatermark.
const REQUEST_HEADERS_STATUS_CONTINUE: u32 = 0;
const REQUEST_HEADERS_STATUS_STOP_ITERATION: u32 = 1;
// The body, trailers and response statuses: 0 = Continue in each of their enums.
const STATUS_CONTINUE: u32 = 0;
// envoy_dynamic_module_type_on_http_filter_request_body_status: Continue,
// StopIterationAndBuffer, StopIterationAndWatermark, StopIterationNoBuffer (FilterDataStatus).
const REQUEST_BODY_STATUS_STOP_ITERATION_AND_BUFFER: u32 = 1;
// envoy_dynamic_module_type_on_http_filter_request_trailers_status: Continue, StopIteration.
const REQUEST_TRAILERS_STATUS_STOP_ITERATION: u32 = 1;

// Every symbol below is in the 1.40.0 binary's `nm -D` as `T` (defined, exported).
unsafe extern "C" {
    fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);

    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        filter_config_envoy_ptr: *mut c_void,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        counter_id_ptr: *mut usize,
    ) -> u32;

    fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter_envoy_ptr: *mut c_void,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;

    fn envoy_dynamic_module_callback_http_get_header(
        filter_envoy_ptr: *mut c_void,
        header_type: u32,
        key: ModuleBuffer,
        result_buffer: *mut EnvoyBuffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_set_header(
        filter_envoy_ptr: *mut c_void,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_send_response(
        filter_envoy_ptr: *mut c_void,
        status_code: u32,
        headers_vector: *const ModuleHttpHeader,
        headers_vector_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );

    fn envoy_dynamic_module_callback_http_set_dynamic_metadata_string_batch(
        filter_envoy_ptr: *mut c_void,
        ns: ModuleBuffer,
        entries: *const ModuleKeyValue,
        entries_size: usize,
    );

    fn envoy_dynamic_module_callback_get_most_specific_route_config(
        filter_envoy_ptr: *mut c_void,
    ) -> *const c_void;

    fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter_envoy_ptr: *mut c_void,
        attribute_id: u32,
        result: *mut EnvoyBuffer,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter_envoy_ptr: *mut c_void);

    fn envoy_dynamic_module_callback_http_filter_scheduler_new(
        filter_envoy_ptr: *mut c_void,
    ) -> *mut c_void;

    fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler_module_ptr: *mut c_void,
        event_id: u64,
    );

    fn envoy_dynamic_module_callback_http_filter_scheduler_delete(
        scheduler_module_ptr: *mut c_void,
    );
}

// --- 3. exported hooks --------------------------------------------------------------------------

/// One stream: the module's state plus the configuration it was created from.
struct Stream<M: HttpFilterModule> {
    config: *const M::Config,
    filter: M,
}

type Config = <crate::Module as HttpFilterModule>::Config;
type RouteConfig = <crate::Module as HttpFilterModule>::RouteConfig;

/// Runs `f`, turning a panic into `None` (and a line in Envoy's log) instead of an abort.
fn guard<T>(hook: &str, f: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => Some(value),
        Err(_) => {
            // Logging itself must not unwind out of here either.
            let _ = catch_unwind(|| {
                log(
                    LogLevel::Error,
                    &format!("certbound: panic in {hook}; failing closed"),
                )
            });
            None
        }
    }
}

/// # Safety
/// `stream_ptr` must be a pointer on_http_filter_new returned and on_http_filter_destroy has not
/// freed; Envoy calls a stream's hooks one at a time on its worker thread.
unsafe fn stream_mut<'s>(stream_ptr: *const c_void) -> Option<&'s mut Stream<crate::Module>> {
    // SAFETY: per this function's contract, the pointer is null or a live, unaliased Box.
    unsafe {
        stream_ptr
            .cast_mut()
            .cast::<Stream<crate::Module>>()
            .as_mut()
    }
}

/// # Safety
/// `config` must be the pointer on_http_filter_config_new returned, still alive: Envoy destroys
/// a filter configuration only after every stream created from it.
unsafe fn config_ref<'s>(config: *const Config) -> &'s Config {
    // SAFETY: per this function's contract.
    unsafe { &*config }
}

/// Denies the request after a panic: 500 with a fixed body, counted by the module.
fn deny_after_panic(config: Option<&Config>, envoy: &mut EnvoyFilter<'_>) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        envoy.send_response(500, &[], PANIC_BODY, PANIC_DETAILS);
        if let Some(config) = config {
            crate::Module::count_panic(config, envoy);
        }
    }));
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    ABI_VERSION_C.as_ptr().cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    filter_config_envoy_ptr: *mut c_void,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    let built = guard("config_new", || {
        // SAFETY: Envoy's name buffer is valid for this hook.
        let name = unsafe { name.as_bytes() };
        // SAFETY: Envoy's config buffer is valid for this hook.
        let config = unsafe { config.as_bytes() };
        let envoy = EnvoyFilterConfig {
            ptr: filter_config_envoy_ptr,
            _hook: PhantomData,
        };
        crate::Module::config_new(&envoy, name, config)
    });
    into_envoy(built.flatten())
}

/// # Safety
/// Called by Envoy only, with a pointer `on_http_filter_config_new` returned, passed once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(
    filter_config_ptr: *const c_void,
) {
    // SAFETY: per this hook's contract, a pointer config_new returned (into_envoy), once.
    unsafe { destroy::<Config>(filter_config_ptr, "config_destroy") }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    let built = guard("per_route_config_new", || {
        // SAFETY: Envoy's name buffer is valid for this hook.
        let name = unsafe { name.as_bytes() };
        // SAFETY: Envoy's config buffer is valid for this hook.
        let config = unsafe { config.as_bytes() };
        crate::Module::route_config_new(name, config)
    });
    into_envoy(built.flatten())
}

/// # Safety
/// Called by Envoy only, with a pointer `on_http_filter_per_route_config_new` returned, passed once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(
    filter_config_ptr: *const c_void,
) {
    // SAFETY: per this hook's contract, a pointer per_route_config_new returned (into_envoy),
    // once.
    unsafe { destroy::<RouteConfig>(filter_config_ptr, "per_route_config_destroy") }
}

/// Hands `value` to Envoy as an owned pointer (null for `None`: Envoy refuses the config).
fn into_envoy<T>(value: Option<T>) -> *const c_void {
    match value {
        Some(v) => Box::into_raw(Box::new(v)).cast_const().cast(),
        None => std::ptr::null(),
    }
}

/// Takes back and drops what `into_envoy::<T>` handed out.
///
/// # Safety
/// `ptr` is null or came from `into_envoy::<T>` and is passed here once.
unsafe fn destroy<T>(ptr: *const c_void, hook: &'static str) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: per this function's contract, a Box<T> leaked by into_envoy, freed once.
    let value = unsafe { Box::from_raw(ptr.cast_mut().cast::<T>()) };
    guard(hook, move || drop(value));
}

/// # Safety
/// Called by Envoy only, with a live pointer `on_http_filter_config_new` returned.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    filter_config_ptr: *const c_void,
    _filter_envoy_ptr: *mut c_void,
) -> *const c_void {
    if filter_config_ptr.is_null() {
        return std::ptr::null();
    }
    let config_ptr = filter_config_ptr.cast::<Config>();
    let stream = guard("filter_new", || {
        // SAFETY: the config this filter is created from, alive (see config_ref).
        let config = unsafe { config_ref(config_ptr) };
        Stream {
            config: config_ptr,
            filter: crate::Module::stream_new(config),
        }
    });
    // A null stream makes Envoy close the stream: fail closed.
    stream.map_or(std::ptr::null(), |s| {
        Box::into_raw(Box::new(s)).cast_const().cast()
    })
}

/// # Safety
/// Called by Envoy only, with a pointer `on_http_filter_new` returned, passed once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(
    filter_module_ptr: *const c_void,
) {
    if filter_module_ptr.is_null() {
        return;
    }
    // SAFETY: a pointer filter_new returned from Box::into_raw; Envoy destroys it once.
    let stream =
        unsafe { Box::from_raw(filter_module_ptr.cast_mut().cast::<Stream<crate::Module>>()) };
    guard("filter_destroy", move || drop(stream));
}

/// # Safety
/// Called by Envoy only, with the live filter pointers of one stream (Envoy's and `on_http_filter_new`'s), on its worker thread.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
    end_of_stream: bool,
) -> u32 {
    let mut envoy = EnvoyFilter::new(filter_envoy_ptr);
    // SAFETY: this stream's pointer from filter_new, still alive during its hooks.
    let Some(stream) = (unsafe { stream_mut(filter_module_ptr) }) else {
        deny_after_panic(None, &mut envoy);
        return HeadersStatus::StopIteration.to_abi();
    };
    // SAFETY: the stream's configuration outlives the stream (see config_ref).
    let config = unsafe { config_ref(stream.config) };
    let outcome = guard("request_headers", || {
        stream
            .filter
            .on_request_headers(config, &mut envoy, end_of_stream)
    });
    match outcome {
        Some(status) => status.to_abi(),
        None => {
            deny_after_panic(Some(config), &mut envoy);
            HeadersStatus::StopIteration.to_abi()
        }
    }
}

/// # Safety
/// Called by Envoy only, with the live filter pointers of one stream (Envoy's and `on_http_filter_new`'s), on its worker thread.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    filter_envoy_ptr: *mut c_void,
    filter_module_ptr: *const c_void,
    event_id: u64,
) {
    let mut envoy = EnvoyFilter::new(filter_envoy_ptr);
    // SAFETY: this stream's pointer from filter_new, still alive during its hooks (Envoy drops
    // events of destroyed streams).
    let Some(stream) = (unsafe { stream_mut(filter_module_ptr) }) else {
        return;
    };
    // SAFETY: the stream's configuration outlives the stream (see config_ref).
    let config = unsafe { config_ref(stream.config) };
    if guard("scheduled", || {
        stream.filter.on_scheduled(config, &mut envoy, event_id)
    })
    .is_none()
    {
        // The request is still held (the module resumes it from here): answer it.
        deny_after_panic(Some(config), &mut envoy);
    }
}

/// Whether the stream at `filter_module_ptr` is still waiting for its decision (see
/// `HttpFilterModule::holds_request`); a stream that cannot be read is treated as held.
fn held(filter_module_ptr: *const c_void) -> bool {
    // SAFETY: Envoy passes the pointer on_http_filter_new returned, on the stream's own thread,
    // and no other reference to the stream is live during this hook.
    match unsafe { stream_mut(filter_module_ptr) } {
        Some(stream) => {
            catch_unwind(AssertUnwindSafe(|| stream.filter.holds_request())).unwrap_or(true)
        }
        None => true,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _: *mut c_void,
    filter_module_ptr: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    if held(filter_module_ptr) {
        // Buffered (up to the connection's buffer limit) until the decision resumes or
        // answers the request.
        REQUEST_BODY_STATUS_STOP_ITERATION_AND_BUFFER
    } else {
        STATUS_CONTINUE
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _: *mut c_void,
    filter_module_ptr: *const c_void,
) -> u32 {
    if held(filter_module_ptr) {
        REQUEST_TRAILERS_STATUS_STOP_ITERATION
    } else {
        STATUS_CONTINUE
    }
}

// The hooks below are required by Envoy 1.40 (it refuses a module without any of them) but
// certbound has nothing to do in them: responses pass untouched, and callouts are not used.

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _: *mut c_void,
    _: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    STATUS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _: *mut c_void,
    _: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    STATUS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _: *mut c_void,
    _: *const c_void,
) -> u32 {
    STATUS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _: *mut c_void,
    _: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _: *mut c_void,
    _: *const c_void,
    _callout_id: u64,
    _result: u32,
    _headers: *const EnvoyHttpHeader,
    _headers_size: usize,
    _body_chunks: *const EnvoyBuffer,
    _body_chunks_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _: *mut c_void,
    _: *const c_void,
    _stream_id: u64,
    _headers: *const EnvoyHttpHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _: *mut c_void,
    _: *const c_void,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _: *mut c_void,
    _: *const c_void,
    _stream_id: u64,
    _trailers: *const EnvoyHttpHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _: *mut c_void,
    _: *const c_void,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _: *mut c_void,
    _: *const c_void,
    _stream_id: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _: *mut c_void,
    _: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _: *mut c_void,
    _: *const c_void,
) {
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_init_returns_the_abi_version_as_a_c_string() {
        let ptr = envoy_dynamic_module_on_program_init();
        // SAFETY: a pointer to a static NUL-terminated byte string.
        let version = unsafe { std::ffi::CStr::from_ptr(ptr) };
        assert_eq!(version.to_str(), Ok(ABI_VERSION));
        assert_eq!(ABI_VERSION, "v0.2.0");
    }

    #[test]
    fn a_null_or_empty_envoy_buffer_reads_as_empty() {
        // SAFETY: null buffers are handled without reading memory.
        assert_eq!(unsafe { EnvoyBuffer::NULL.as_bytes() }, b"");
        let text = b"abc";
        let empty = EnvoyBuffer {
            ptr: text.as_ptr().cast(),
            length: 0,
        };
        // SAFETY: points into `text`.
        assert_eq!(unsafe { empty.as_bytes() }, b"");
    }

    #[test]
    fn an_envoy_buffer_reads_exactly_its_length() {
        let text = b"sha256-digest";
        let buffer = EnvoyBuffer {
            ptr: text.as_ptr().cast(),
            length: 6,
        };
        // SAFETY: points into `text`, 6 <= its length.
        assert_eq!(unsafe { buffer.as_bytes() }, b"sha256");
    }

    #[test]
    fn a_module_buffer_borrows_the_bytes_it_is_made_from() {
        let text = "x-certbound-policy";
        let buffer = ModuleBuffer::from_bytes(text.as_bytes());
        assert_eq!(buffer.ptr, text.as_ptr().cast());
        assert_eq!(buffer.length, text.len());
        let empty = ModuleBuffer::from_bytes(b"");
        assert_eq!(empty.length, 0);
    }

    #[test]
    fn buffers_and_headers_have_the_c_layout() {
        let word = std::mem::size_of::<usize>();
        assert_eq!(std::mem::size_of::<EnvoyBuffer>(), 2 * word);
        assert_eq!(std::mem::size_of::<ModuleBuffer>(), 2 * word);
        assert_eq!(std::mem::size_of::<ModuleHttpHeader>(), 4 * word);
        assert_eq!(std::mem::offset_of!(ModuleHttpHeader, value_ptr), 2 * word);
    }

    #[test]
    fn enum_ordinals_match_abi_h() {
        assert_eq!(HeadersStatus::Continue.to_abi(), 0);
        assert_eq!(HeadersStatus::StopIteration.to_abi(), 1);
        assert_eq!(LogLevel::Info.to_abi(), 2);
        assert_eq!(attribute::SOURCE_ADDRESS, AttributeId(24));
        assert_eq!(attribute::SHA256_PEER_CERTIFICATE_DIGEST, AttributeId(38));
    }

    #[test]
    fn a_panic_is_caught_logged_and_reported_as_none() {
        assert_eq!(guard("test", || 7), Some(7));
        fake_envoy::LOGGED.with(|l| l.borrow_mut().clear());
        assert_eq!(guard("request_headers", || -> u32 { panic!("boom") }), None);
        let logged = fake_envoy::LOGGED.with(|l| l.borrow().clone());
        assert_eq!(
            logged,
            vec![(
                LOG_LEVEL_ERROR,
                "certbound: panic in request_headers; failing closed".to_string()
            )]
        );
    }
}

/// Stand-ins for the callbacks Envoy exports, so unit-test executables link (a cdylib may leave
/// them undefined; an executable may not). Only `log` records anything.
#[cfg(test)]
mod fake_envoy {
    use super::{EnvoyBuffer, ModuleBuffer, ModuleHttpHeader, ModuleKeyValue};
    use std::cell::RefCell;
    use std::ffi::c_void;

    thread_local! {
        pub static LOGGED: RefCell<Vec<(u32, String)>> = const { RefCell::new(Vec::new()) };
    }

    #[no_mangle]
    extern "C" fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer) {
        // SAFETY: the module passes buffers borrowing live `&str`s.
        let text = unsafe { std::slice::from_raw_parts(message.ptr.cast::<u8>(), message.length) };
        LOGGED.with(|l| {
            l.borrow_mut()
                .push((level, String::from_utf8_lossy(text).into_owned()))
        });
    }
    #[no_mangle]
    extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        _: *mut c_void,
        _: ModuleBuffer,
        _: *const ModuleBuffer,
        _: usize,
        _: *mut usize,
    ) -> u32 {
        1
    }
    #[no_mangle]
    extern "C" fn envoy_dynamic_module_callback_http_filter_increment_counter(
        _: *mut c_void,
        _: usize,
        _: *const ModuleBuffer,
        _: usize,
        _: u64,
    ) -> u32 {
        1
    }
    #[no_mangle]
    extern "C" fn envoy_dynamic_module_callback_http_get_header(
        _: *mut c_void,
        _: u32,
        _: ModuleBuffer,
        _: *mut EnvoyBuffer,
        _: usize,
        _: *mut usize,
    ) -> bool {
        false
    }
    #[no_mangle]
    extern "C" fn envoy_dynamic_module_callback_http_set_header(
        _: *mut c_void,
        _: u32,
        _: ModuleBuffer,
        _: ModuleBuffer,
    ) -> bool {
        false
    }
    #[no_mangle]
    extern "C" fn envoy_dynamic_module_callback_http_send_response(
        _: *mut c_void,
        _: u32,
        _: *const ModuleHttpHeader,
        _: usize,
        _: ModuleBuffer,
        _: ModuleBuffer,
    ) {
    }
    #[no_mangle]
    extern "C" fn envoy_dynamic_module_callback_http_set_dynamic_metadata_string_batch(
        _: *mut c_void,
        _: ModuleBuffer,
        _: *const ModuleKeyValue,
        _: usize,
    ) {
    }
    #[no_mangle]
    extern "C" fn envoy_dynamic_module_callback_get_most_specific_route_config(
        _: *mut c_void,
    ) -> *const c_void {
        std::ptr::null()
    }
    #[no_mangle]
    extern "C" fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        _: *mut c_void,
        _: u32,
        _: *mut EnvoyBuffer,
    ) -> bool {
        false
    }
    #[no_mangle]
    extern "C" fn envoy_dynamic_module_callback_http_filter_continue_decoding(_: *mut c_void) {}
    #[no_mangle]
    extern "C" fn envoy_dynamic_module_callback_http_filter_scheduler_new(
        _: *mut c_void,
    ) -> *mut c_void {
        std::ptr::null_mut()
    }
    #[no_mangle]
    extern "C" fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        _: *mut c_void,
        _: u64,
    ) {
    }
    #[no_mangle]
    extern "C" fn envoy_dynamic_module_callback_http_filter_scheduler_delete(_: *mut c_void) {}
}
