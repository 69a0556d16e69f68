//! The `clone3` system call as the job spawner makes it. On x86-64 the child is made
//! the way `vfork` and `posix_spawn` make theirs: it shares the runner's memory and runs
//! on a small stack of its own until it execs, and the calling thread waits until then.
//! A plain fork first copies the page tables of the whole process (for a local runner,
//! the server's) and makes the parent fault on each page it writes afterwards: on a
//! job's pickup here that was 0.6 ms in the fork and 0.5 ms more before the child's
//! exec. posix_spawn cannot start the child inside the job's cgroup; `clone3` can
//! (`CLONE_INTO_CGROUP`), but std and libc have no wrapper that starts the child in a
//! function on another stack, so the three instructions the child needs are written here.
//! Elsewhere than x86-64 the child is forked as before.

use std::ffi::c_void;

/// `CLONE_INTO_CGROUP` (linux/sched.h); not in the libc crate.
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

/// What the child runs. It never returns: it execs or exits.
pub type ChildMain = unsafe extern "C" fn(*mut c_void) -> !;

/// Makes a child with `args` that runs `main(arg)`, and returns its pid once the child
/// has exec'd or exited (on x86-64; elsewhere the child is a fork and may still be
/// running). Every signal is blocked in the child when `main` starts, and stays blocked
/// in this thread until the call returns: the child must reset the handlers it inherited
/// before it unblocks them.
///
/// # Safety
/// `main` may only make async-signal-safe system calls, on data `arg` points to (no
/// allocation, no locks: the child shares this process's memory, whose other threads
/// go on running), and must end in `execve` or `_exit`. On x86-64 it runs on a 64 KiB
/// stack. `args.stack` and `args.stack_size` are set here.
pub unsafe fn clone3(args: &mut CloneArgs, main: ChildMain, arg: *mut c_void) -> std::io::Result<i32> {
    // SAFETY: (whole body) a full signal set, this thread's own mask; see the callers'
    // contract for the child.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let result = clone3_blocked(args, main, arg);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        result
    }
}

#[cfg(target_arch = "x86_64")]
unsafe fn clone3_blocked(args: &mut CloneArgs, main: ChildMain, arg: *mut c_void) -> std::io::Result<i32> {
    let stack = ChildStack::new(64 * 1024)?;
    args.flags |= (libc::CLONE_VM | libc::CLONE_VFORK) as u64;
    args.stack = stack.lowest as u64;
    args.stack_size = stack.len as u64;
    let ret: i64;
    // SAFETY: in the parent the system call returns the child's pid (or -errno) and
    // changes only rax, rcx and r11. The child starts on the new stack (16-byte aligned:
    // its top is a page boundary) with the same registers, so it calls `main(arg)`,
    // which never returns. This thread waits in the kernel (CLONE_VFORK) until the child
    // has exec'd or exited, so the stack and everything `arg` points to outlive the child's
    // use of them.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r13",
            "call r12",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") main as usize,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    drop(stack);
    if ret < 0 {
        Err(std::io::Error::from_raw_os_error(-ret as i32))
    } else {
        Ok(ret as i32)
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn clone3_blocked(args: &mut CloneArgs, main: ChildMain, arg: *mut c_void) -> std::io::Result<i32> {
    // SAFETY: without CLONE_VM this is a fork: the child runs `main` on its own copy of
    // this thread's stack and memory.
    unsafe {
        let pid = libc::syscall(libc::SYS_clone3, args as *const CloneArgs, std::mem::size_of::<CloneArgs>());
        if pid == 0 {
            main(arg)
        }
        if pid < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(pid as i32)
        }
    }
}

/// The child's stack: mapped for the clone, with an unmapped guard page below it, so an
/// overflow faults instead of writing over the runner's memory.
#[cfg(target_arch = "x86_64")]
struct ChildStack {
    mapping: *mut c_void,
    mapped: usize,
    lowest: *mut c_void,
    len: usize,
}

#[cfg(target_arch = "x86_64")]
impl ChildStack {
    fn new(len: usize) -> std::io::Result<ChildStack> {
        // SAFETY: a fresh anonymous mapping of our own; the guard page is its first page.
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
            let mapped = len + page;
            let mapping = libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if mapping == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            let stack = ChildStack {
                mapping,
                mapped,
                lowest: mapping.cast::<u8>().add(page).cast(),
                len,
            };
            if libc::mprotect(mapping, page, libc::PROT_NONE) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(stack)
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no longer used (the child has exec'd or exited).
        unsafe {
            libc::munmap(self.mapping, self.mapped);
        }
    }
}
