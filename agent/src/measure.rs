//! Measurement probes of the benchmarks, built only with the `measure` feature (never in a
//! service build): the device's CPU time and page faults, and heap accounting for Rust's
//! allocator and OpenSSL's (`malloc`/`realloc`/`free` hooks).
#![allow(unsafe_code)]

/// CPU time (user + system) the whole process has used so far: `clock_gettime` with
/// `CLOCK_PROCESS_CPUTIME_ID` (nanosecond resolution; std has no CPU clock). The device
/// reports it for its session setup, which calibrates the benchmark's CPU throttle.
pub fn process_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock ID is a constant Linux provides.
    let ret = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if ret != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The process's resource use so far: (user CPU, system CPU, minor page faults), from
/// `getrusage(RUSAGE_SELF)`; zeros if the call fails. The device reports the system share and
/// the page faults of its session setup (the kernel work a throttled CPU pays for too).
pub fn process_usage() -> (std::time::Duration, std::time::Duration, u64) {
    // SAFETY: `rusage` is plain old data; all-zero bytes are a valid value of it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage; RUSAGE_SELF is a constant Linux provides.
    let ret = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if ret != 0 {
        return (std::time::Duration::ZERO, std::time::Duration::ZERO, 0);
    }
    let tv = |t: libc::timeval| {
        std::time::Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.max(0) as u32) * 1000)
    };
    (tv(ru.ru_utime), tv(ru.ru_stime), ru.ru_minflt.max(0) as u64)
}

/// Heap accounting for the device's figures: bytes in use and the peak, for Rust's allocator
/// (install [`CountingAlloc`] as `#[global_allocator]`) and, after [`count_openssl_heap`],
/// OpenSSL's own `malloc`/`realloc`/`free`.
pub mod heap {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::ffi::{c_char, c_int, c_void};
    use std::sync::atomic::{AtomicUsize, Ordering};

    static CURRENT: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);
    /// OpenSSL blocks carry their size in a header of this many bytes (keeps 16-byte alignment).
    const HEADER: usize = 16;

    fn grow(n: usize) {
        let now = CURRENT.fetch_add(n, Ordering::Relaxed) + n;
        PEAK.fetch_max(now, Ordering::Relaxed);
    }

    fn shrink(n: usize) {
        CURRENT.fetch_sub(n, Ordering::Relaxed);
    }

    /// Bytes in use now.
    pub fn current() -> usize {
        CURRENT.load(Ordering::Relaxed)
    }

    /// Highest bytes in use since the last [`reset_peak`].
    pub fn peak() -> usize {
        PEAK.load(Ordering::Relaxed)
    }

    /// Starts a new peak measurement from the bytes in use now.
    pub fn reset_peak() {
        PEAK.store(current(), Ordering::Relaxed);
    }

    /// The system allocator, counted.
    pub struct CountingAlloc;

    // SAFETY: every method forwards to `System` with the caller's own arguments, so the
    // GlobalAlloc contract is System's; the counters are plain atomics.
    unsafe impl GlobalAlloc for CountingAlloc {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: forwarded unchanged.
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                grow(layout.size());
            }
            p
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: forwarded unchanged.
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                grow(layout.size());
            }
            p
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: forwarded unchanged.
            unsafe { System.dealloc(ptr, layout) };
            shrink(layout.size());
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: forwarded unchanged.
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                grow(new_size);
                shrink(layout.size());
            }
            p
        }
    }

    unsafe extern "C" {
        fn CRYPTO_set_mem_functions(
            m: Option<unsafe extern "C" fn(usize, *const c_char, c_int) -> *mut c_void>,
            r: Option<
                unsafe extern "C" fn(*mut c_void, usize, *const c_char, c_int) -> *mut c_void,
            >,
            f: Option<unsafe extern "C" fn(*mut c_void, *const c_char, c_int)>,
        ) -> c_int;
    }

    unsafe extern "C" fn ossl_malloc(n: usize, _f: *const c_char, _l: c_int) -> *mut c_void {
        let Some(total) = n.checked_add(HEADER) else {
            return std::ptr::null_mut();
        };
        // SAFETY: plain malloc; the header is written inside the new block.
        unsafe {
            let base = libc::malloc(total) as *mut u8;
            if base.is_null() {
                return std::ptr::null_mut();
            }
            (base as *mut usize).write(n);
            grow(n);
            base.add(HEADER) as *mut c_void
        }
    }

    unsafe extern "C" fn ossl_free(p: *mut c_void, _f: *const c_char, _l: c_int) {
        if p.is_null() {
            return;
        }
        // SAFETY: every block OpenSSL frees through us came from ossl_malloc/ossl_realloc
        // (installed before OpenSSL's first allocation), so the header precedes it.
        unsafe {
            let base = (p as *mut u8).sub(HEADER);
            shrink((base as *const usize).read());
            libc::free(base as *mut c_void);
        }
    }

    unsafe extern "C" fn ossl_realloc(
        p: *mut c_void,
        n: usize,
        f: *const c_char,
        l: c_int,
    ) -> *mut c_void {
        if p.is_null() {
            // SAFETY: as malloc.
            return unsafe { ossl_malloc(n, f, l) };
        }
        if n == 0 {
            // SAFETY: as free.
            unsafe { ossl_free(p, f, l) };
            return std::ptr::null_mut();
        }
        let Some(total) = n.checked_add(HEADER) else {
            return std::ptr::null_mut();
        };
        // SAFETY: `p` came from us (see ossl_free); realloc keeps the header at the start.
        unsafe {
            let base = (p as *mut u8).sub(HEADER);
            let old = (base as *const usize).read();
            let nb = libc::realloc(base as *mut c_void, total) as *mut u8;
            if nb.is_null() {
                return std::ptr::null_mut();
            }
            (nb as *mut usize).write(n);
            grow(n);
            shrink(old);
            nb.add(HEADER) as *mut c_void
        }
    }

    /// Routes OpenSSL's allocations through the counters. Must run before OpenSSL allocates
    /// anything (first thing in `main`); returns false if it is too late.
    pub fn count_openssl_heap() -> bool {
        // SAFETY: the three functions form a consistent malloc/realloc/free family; OpenSSL
        // accepts them only before its first allocation, so no block predates them.
        unsafe {
            CRYPTO_set_mem_functions(Some(ossl_malloc), Some(ossl_realloc), Some(ossl_free)) == 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_counters_follow_allocations() {
        // The test binary does not install CountingAlloc; exercise the counters directly
        // through the OpenSSL-style functions' bookkeeping helpers.
        heap::reset_peak();
        let before = heap::current();
        let a = CountingProbe::alloc(1000);
        assert!(heap::current() >= before + 1000);
        assert!(heap::peak() >= before + 1000);
        drop(a);
        assert_eq!(heap::current(), before);
    }

    struct CountingProbe(*mut u8, std::alloc::Layout);
    impl CountingProbe {
        fn alloc(n: usize) -> CountingProbe {
            use std::alloc::GlobalAlloc;
            let layout = std::alloc::Layout::from_size_align(n, 8).unwrap();
            // SAFETY: non-zero layout; freed in Drop with the same layout.
            let p = unsafe { heap::CountingAlloc.alloc(layout) };
            assert!(!p.is_null());
            CountingProbe(p, layout)
        }
    }
    impl Drop for CountingProbe {
        fn drop(&mut self) {
            use std::alloc::GlobalAlloc;
            // SAFETY: allocated in CountingProbe::alloc with this layout.
            unsafe { heap::CountingAlloc.dealloc(self.0, self.1) };
        }
    }

    #[test]
    fn process_cpu_time_counts_work() {
        let before = process_cpu_time();
        assert!(before > std::time::Duration::ZERO);
        // Spin until the clock has advanced 5 ms (it must, well before 10 s of wall time).
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while process_cpu_time() - before < std::time::Duration::from_millis(5) {
            assert!(start.elapsed() < std::time::Duration::from_secs(10));
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}
