#![no_std]
//! TA core (work in progress).
