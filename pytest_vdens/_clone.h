/* clone_parent(): a child of our parent's (CLONE_PARENT), for _zygote.c and _fork.c.
 *
 * Like fork(), the child goes on from here on a copy of our stack.  clone3()
 * first: its arguments are the same on every architecture, and it can set the
 * child's TID for glibc as glibc's fork() does.  clone() where a seccomp filter
 * refuses clone3 (some container runtimes); its argument order is per-arch.
 */
#ifndef PYTEST_VDENS_CLONE_H
#define PYTEST_VDENS_CLONE_H

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

/* What clone3() takes, as of its first version (Linux 5.3). */
struct clone_args_v0 {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
};

/* flags: CLONE_NEW* to add; tid_address: glibc's copy of our TID, or NULL */
static inline long clone_parent(long flags, int *tid_address) {
    /* exit_signal 0: with CLONE_PARENT, the child has ours (SIGCHLD) */
    struct clone_args_v0 args = {.flags = (uint64_t)(flags | CLONE_PARENT)};
    if (tid_address) {
        args.flags |= CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID;
        args.child_tid = (uintptr_t)tid_address;
    }
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid >= 0 || errno != ENOSYS)
        return pid;
#ifdef __s390x__
    return syscall(SYS_clone, 0, flags | CLONE_PARENT | SIGCHLD);
#else
    return syscall(SYS_clone, flags | CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
#endif
}

#endif
