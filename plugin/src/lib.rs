//! TwinPeaks
