/* Forking this process into a namespace with one copy of it: fork_into().
 *
 * A marked test runs in a child of pytest that is inside its namespace, PID
 * namespace included.  Joining a PID namespace only applies to the joiner's
 * children, and pytest must not join anything itself (unprivileged, it could
 * not come back).  So an intermediate joins and clones the test's process,
 * which CLONE_PARENT makes pytest's own child.  The intermediate used to be a
 * fork of pytest (~60 MB): its page tables were copied twice, and it ran
 * Python.  Here it shares pytest's memory (CLONE_VM|CLONE_VFORK, as
 * posix_spawn does), runs only the C below on a stack of its own, and the
 * one copy is the test's process, which longjmp()s back into the caller's
 * frame and returns 0 like fork().
 *
 * Only for a single-threaded caller: glibc's fork() takes malloc's locks
 * across the copy and this does not, so another thread inside malloc at that
 * moment would leave the child a lock nobody releases.  With threads,
 * kernel.fork_into forks plainly first, and that copy joins (here=True).
 */
/* longjmp() across stacks is the point: not fortify's __longjmp_chk */
#undef _FORTIFY_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <linux/capability.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "_clone.h"

#define MAX_JOINS 8
#define STACK_SIZE (64 * 1024)

struct job {
    int fds[MAX_JOINS], types[MAX_JOINS], njoins;
    const char *cwd;          /* to return to after joining a mount namespace, or NULL */
    uint64_t keep;            /* capabilities to keep, as a bit set */
    int last_cap;
    int *tid_address;         /* glibc's copy of our TID, which the child's must hold */
    pid_t parent;
    /* out */
    pid_t pid;
    int err;
    const char *step;
};

static jmp_buf back;

static int confine(const struct job *j) {
    /* EPERM: already inside (no CAP_SETPCAP), where the set was dropped on the way in */
    for (int cap = 0; cap <= j->last_cap; cap++)
        if (!(j->keep >> cap & 1) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0
                && errno != EINVAL && errno != EPERM)
            return -1;
    struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    for (int i = 0; i < 2; i++) {
        uint32_t bits = (uint32_t)(j->keep >> (32 * i));
        data[i].effective = data[i].permitted = data[i].inheritable = bits;
    }
    if (syscall(SYS_capset, &head, data) < 0)
        return -1;
    /* ambient: what an exec'd non-root uid keeps */
    for (int cap = 0; cap <= j->last_cap; cap++)
        if (j->keep >> cap & 1 && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0)
            return -1;
    return 0;
}

static int intermediate(void *arg) {
    struct job *j = arg;
    static const char *names[] = {"setns(user)", "setns(net)", "setns(mnt)", "setns(pid)"};
    for (int i = 0; i < j->njoins; i++) {
        if (setns(j->fds[i], j->types[i]) < 0) {
            j->step = j->types[i] == CLONE_NEWUSER ? names[0] : j->types[i] == CLONE_NEWNET ? names[1]
                    : j->types[i] == CLONE_NEWNS ? names[2] : names[3];
            j->err = errno;
            return 0;
        }
    }
    if (j->cwd && chdir(j->cwd) < 0) { /* joining a mount namespace moved us to its root */
        j->step = "chdir";
        j->err = errno;
        return 0;
    }
    if (confine(j) < 0) {
        j->step = "capabilities";
        j->err = errno;
        return 0;
    }
    long pid = clone_parent(0, j->tid_address); /* the TID as glibc's fork() sets it */
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        pid_t pp = getppid(); /* 0: our parent is outside our PID namespace */
        if (pp != 0 && pp != j->parent)
            _exit(1); /* it died before we could follow it */
        longjmp(back, 1);
    }
    if (pid < 0) {
        j->step = "clone";
        j->err = errno;
    } else {
        j->pid = (pid_t)pid;
    }
    return 0;
}

static PyObject *refused(const struct job *j) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s: %s", j->step, strerror(j->err));
    PyObject *e = Py_BuildValue("(is)", j->err, msg);
    if (e) {
        PyErr_SetObject(PyExc_OSError, e);
        Py_DECREF(e);
    }
    return NULL;
}

static PyObject *fork_into(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *joins, *keep;
    const char *cwd;
    int here = 0;
    struct job j = {0};
    if (!PyArg_ParseTuple(args, "OzOi|p", &joins, &cwd, &keep, &j.last_cap, &here))
        return NULL;
    Py_ssize_t n = PySequence_Length(joins);
    if (n < 0 || n > MAX_JOINS || j.last_cap > 63)
        return PyErr_Format(PyExc_ValueError, "fork_into: at most %d joins, caps up to 63", MAX_JOINS);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_GetItem(joins, i);
        int ok = item && PyArg_ParseTuple(item, "ii", &j.fds[i], &j.types[i]);
        Py_XDECREF(item);
        if (!ok)
            return NULL;
    }
    j.njoins = (int)n;
    PyObject *it = PyObject_GetIter(keep), *cap;
    if (!it)
        return NULL;
    while ((cap = PyIter_Next(it))) {
        long c = PyLong_AsLong(cap);
        Py_DECREF(cap);
        if (c < 0 || c > 63) {
            Py_DECREF(it);
            return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "capability %ld", c);
        }
        j.keep |= 1ULL << c;
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    j.cwd = cwd;
    j.parent = here ? getppid() : getpid(); /* whose child the child is */
    if (prctl(PR_GET_TID_ADDRESS, &j.tid_address, 0, 0, 0) < 0)
        j.tid_address = NULL;

    if (here) { /* a throwaway copy joins and clones itself: the child is its parent's */
        PyOS_BeforeFork();
        if (setjmp(back)) {
            PyOS_AfterFork_Child();
            return PyLong_FromLong(0);
        }
        intermediate(&j);
        PyOS_AfterFork_Parent();
        return j.step ? refused(&j) : PyLong_FromLong(j.pid);
    }
    void *stack = mmap(NULL, STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED)
        return PyErr_SetFromErrno(PyExc_OSError);
    /* no handler may run in the intermediate, on our memory */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    PyOS_BeforeFork();
    if (setjmp(back)) { /* the child, in its own copy */
        munmap(stack, STACK_SIZE);
        PyOS_AfterFork_Child();
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return PyLong_FromLong(0);
    }
    pid_t mid = clone(intermediate, (char *)stack + STACK_SIZE, CLONE_VM | CLONE_VFORK | SIGCHLD, &j);
    int err = errno;
    PyOS_AfterFork_Parent();
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    munmap(stack, STACK_SIZE);
    if (mid < 0) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    while (waitpid(mid, NULL, 0) < 0 && errno == EINTR)
        ;
    return j.step ? refused(&j) : PyLong_FromLong(j.pid);
}

static PyMethodDef methods[] = {
    {"fork_into", fork_into, METH_VARARGS,
     "fork_into(joins, cwd, keep_caps, last_cap, here=False): fork() into the namespaces "
     "joins [(fd, nstype), ...], chdir(cwd) there, keeping only keep_caps: 0 in the child, "
     "which is our own, else its pid. here: this process joins them itself, and the "
     "child is its parent's."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_fork",
    .m_doc = "Forking into a namespace with one copy (see _fork.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__fork(void) { return PyModule_Create(&module); }
