//! Probers: placeholder replaced below.
