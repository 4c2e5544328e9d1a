#![no_std]
//! Host <-> TA protocol (work in progress).
