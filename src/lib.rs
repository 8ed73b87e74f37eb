//! End-to-end suite for TwinPeaks and D2TLS; the tests live in tests/.
