//! The `arca` command: parses arguments, calls the library, prints.

mod cli;

/// mimalloc rather than the system allocator: the backup walk frees on one thread what it
/// allocated on another, which in glibc's allocator meant waiting on the other thread's
/// arena lock, and glibc gave memory back and faulted it in again thousands of times in
/// a second.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(cli::main());
}
