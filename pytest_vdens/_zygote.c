/* The namespace zygote: a small process that clones namespaces for the helper.
 *
 * Forking the helper (a Python process of ~20 MB) for every namespace cost
 * about 4 ms of CPU in copied page tables, copy-on-write faults and Python
 * work in the child; the kernel's own share is ~1.4 ms.  The zygote is a
 * bare interpreter that enters serve() and never returns to Python, so each
 * clone() copies a small process and the child runs only the C below: it
 * writes the identity uid/gid map, optionally installs a resolv.conf in a
 * private mount namespace, makes persistent taps, brings lo up, sends the
 * taps, a netlink socket and its namespace fds to the helper, and stays as
 * the namespace's init (PID 1) until its keeper pipe closes.
 *
 * Request (helper -> zygote, one SEQPACKET datagram, 2 fds: reply socket,
 * keeper pipe read end): NUL-terminated fields
 *     flags, uid, gid, resolvconf path, resolv.conf text, ifname...
 * Answer: "<pid>" or "-<errno>" when clone() failed.  The child answers on
 * the reply socket in JSON: {"ok":true,"nsnames":[...],"indexes":[...]}
 * with the fds, or {"ok":false,"step":"...","errno":N,"arg":"..."}; the
 * helper turns a step into the message a user reads (maker.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include "_clone.h"

#define MAX_IFACES 245 /* protocol.MAX_FDS - 8 */
#define REQ_MAX 65536

static char request[REQ_MAX];

struct spec {
    long flags;
    unsigned uid, gid;
    const char *resolvconf; /* "" for none */
    const char *resolv_text; /* "" for none */
    const char *ifnames[MAX_IFACES];
    int nifaces;
};

static int parse(char *buf, size_t len, struct spec *s) {
    const char *field[4 + 1 + MAX_IFACES];
    int n = 0;
    size_t i = 0;
    while (i < len && n < (int)(sizeof field / sizeof field[0])) {
        field[n++] = buf + i;
        i += strnlen(buf + i, len - i) + 1;
    }
    if (n < 5)
        return -1;
    s->flags = strtol(field[0], NULL, 10);
    s->uid = (unsigned)strtoul(field[1], NULL, 10);
    s->gid = (unsigned)strtoul(field[2], NULL, 10);
    s->resolvconf = field[3];
    s->resolv_text = field[4];
    s->nifaces = n - 5;
    for (int k = 0; k < s->nifaces; k++)
        s->ifnames[k] = field[5 + k];
    return 0;
}

/* -- the child ----------------------------------------------------------- */

static int reply_sock = -1;

/* JSON string body: names and paths come from the helper, checked there */
static void json_str(char *out, size_t size, const char *s) {
    size_t o = 0;
    for (; *s && o + 7 < size; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            o += (size_t)snprintf(out + o, size - o, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            o += (size_t)snprintf(out + o, size - o, "\\u%04x", c);
        else
            out[o++] = (char)c;
    }
    out[o] = 0;
}

static void fail(const char *step, int err, const char *arg) __attribute__((noreturn));
static void fail(const char *step, int err, const char *arg) {
    char quoted[512], msg[1024];
    json_str(quoted, sizeof quoted, arg ? arg : "");
    int n = snprintf(msg, sizeof msg, "{\"ok\": false, \"step\": \"%s\", \"errno\": %d, \"arg\": \"%s\"}",
                     step, err, quoted);
    if (send(reply_sock, msg, (size_t)n, MSG_NOSIGNAL) < 0) {
        /* the helper is gone: nothing to tell */
    }
    _exit(0);
}

static int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t len = (ssize_t)strlen(text);
    ssize_t n = write(fd, text, (size_t)len);
    int err = errno;
    close(fd);
    errno = err;
    return n == len ? 0 : -1;
}

static void identity_maps(unsigned uid, unsigned gid) {
    char line[64];
    if (write_file("/proc/self/setgroups", "deny") < 0)
        fail("setgroups", errno, "/proc/self/setgroups");
    snprintf(line, sizeof line, "%u %u 1", uid, uid);
    /* mapping uid 0 needs CAP_SETFCAP where we came from (Linux >= 5.12):
       root in a namespace without it stays unmapped, with the same rights */
    if (write_file("/proc/self/uid_map", line) < 0 && !(errno == EPERM && uid == 0))
        fail("uid_map", errno, line);
    snprintf(line, sizeof line, "%u %u 1", gid, gid);
    if (write_file("/proc/self/gid_map", line) < 0 && !(errno == EPERM && gid == 0))
        fail("gid_map", errno, line);
}

static void must_mount(const char *src, const char *target, const char *type, unsigned long flags) {
    if (mount(src, target, type, flags, NULL) < 0)
        fail("mount", errno, target);
}

static void bind_readonly(const char *source) {
    /* read-only, so code inside cannot write through to a user's file */
    must_mount(source, "/etc/resolv.conf", NULL, MS_BIND);
    must_mount(NULL, "/etc/resolv.conf", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY);
}

/* A private mount tree, then resolv.conf bound over /etc/resolv.conf. A
   generated file lives on a tmpfs mounted over /tmp only while it is bound. */
static void install_resolver(const struct spec *s) {
    must_mount(NULL, "/", NULL, MS_REC | MS_PRIVATE);
    if (*s->resolv_text) {
        must_mount("pytest-vdens", "/tmp", "tmpfs", 0);
        int fd = open("/tmp/resolv.conf", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0444);
        size_t len = strlen(s->resolv_text);
        if (fd < 0 || write(fd, s->resolv_text, len) != (ssize_t)len)
            fail("resolv.conf", errno, "/tmp/resolv.conf");
        close(fd);
        bind_readonly("/tmp/resolv.conf");
        if (umount2("/tmp", MNT_DETACH) < 0)
            fail("umount", errno, "/tmp");
    } else if (*s->resolvconf) {
        bind_readonly(s->resolvconf);
    }
}

static int open_tap(const char *name) {
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        fail("tun_open", errno, "/dev/net/tun");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    /* persistent: the kernel deletes it with the netns, in a batch, instead
       of a ~25 ms synchronous unregister when the helper closes its fd */
    if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETPERSIST, 1) < 0)
        fail("tun_create", errno, name);
    return fd;
}

static int lo_up(void) {
    int nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (nl < 0)
        fail("netlink", errno, "socket");
    struct {
        struct nlmsghdr h;
        struct ifinfomsg i;
    } req;
    memset(&req, 0, sizeof req);
    req.h.nlmsg_len = sizeof req;
    req.h.nlmsg_type = RTM_NEWLINK;
    req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    req.h.nlmsg_seq = 1;
    req.i.ifi_family = AF_UNSPEC;
    req.i.ifi_index = 1;
    req.i.ifi_flags = IFF_UP;
    req.i.ifi_change = IFF_UP;
    if (send(nl, &req, sizeof req, 0) < 0)
        fail("netlink", errno, "lo");
    char ack[1024];
    ssize_t n = recv(nl, ack, sizeof ack, 0);
    struct nlmsghdr *h = (struct nlmsghdr *)ack;
    if (n < (ssize_t)sizeof *h)
        fail("netlink", n < 0 ? errno : EIO, "lo");
    if (h->nlmsg_type == NLMSG_ERROR) {
        int err = -((struct nlmsgerr *)NLMSG_DATA(h))->error;
        if (err)
            fail("netlink", err, "lo");
    }
    return nl;
}

static void be_init(int keeper) __attribute__((noreturn));
static void be_init(int keeper) {
    /* orphans reparented to us are reaped by the kernel */
    signal(SIGCHLD, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    struct pollfd p = {.fd = keeper, .events = POLLIN};
    for (;;) {
        if (poll(&p, 1, -1) > 0)
            _exit(0); /* the helper closed its end, or died */
    }
}

static void child(const struct spec *s, int sock, int keeper, int zygote_fd) {
    reply_sock = sock;
    close(zygote_fd);
    /* (getppid() is 0 in a new PID namespace: if the helper died before
       this, the keeper pipe's hangup ends us in be_init) */
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    prctl(PR_SET_NAME, "vdens-init", 0, 0, 0);
    identity_maps(s->uid, s->gid);
    if (s->flags & CLONE_NEWNS)
        install_resolver(s);
    int fds[MAX_IFACES + 5], nfds = 0;
    for (int k = 0; k < s->nifaces; k++)
        fds[nfds++] = open_tap(s->ifnames[k]);
    fds[nfds++] = lo_up(); /* kept by the helper, to configure the namespace from outside */
    static const char *const names[] = {"user", "net", "pid_for_children", "mnt"};
    int nnames = s->flags & CLONE_NEWNS ? 4 : 3;
    for (int k = 0; k < nnames; k++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/ns/%s", names[k]);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            fail("nsfd", errno, path);
        fds[nfds++] = fd;
    }

    static char msg[8192];
    int o = snprintf(msg, sizeof msg, "{\"ok\": true, \"nsnames\": [");
    for (int k = 0; k < nnames; k++)
        o += snprintf(msg + o, sizeof msg - (size_t)o, "%s\"%s\"", k ? ", " : "", names[k]);
    o += snprintf(msg + o, sizeof msg - (size_t)o, "], \"indexes\": [");
    for (int k = 0; k < s->nifaces; k++)
        o += snprintf(msg + o, sizeof msg - (size_t)o, "%s%u", k ? ", " : "", if_nametoindex(s->ifnames[k]));
    o += snprintf(msg + o, sizeof msg - (size_t)o, "]}");

    static char control[CMSG_SPACE(sizeof(int) * (MAX_IFACES + 5))];
    struct iovec iov = {.iov_base = msg, .iov_len = (size_t)o};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                        .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    if (sendmsg(sock, &mh, MSG_NOSIGNAL) < 0)
        _exit(0);
    for (int k = 0; k < nfds; k++)
        close(fds[k]);
    close(sock);
    be_init(keeper);
}

/* -- the zygote ------------------------------------------------------------ */

static int recv_request(int fd, size_t *len, int *got, int *nfds) {
    char control[CMSG_SPACE(sizeof(int) * 2)];
    struct iovec iov = {.iov_base = request, .iov_len = sizeof request - 1};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                        .msg_controllen = sizeof control};
    ssize_t n;
    do
        n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return -1;
    *len = (size_t)n;
    request[n] = 0;
    *nfds = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < k; i++) {
                int v;
                memcpy(&v, CMSG_DATA(c) + i * sizeof(int), sizeof v);
                if (*nfds < 2)
                    got[(*nfds)++] = v;
                else
                    close(v);
            }
        }
    }
    return 0;
}

static void answer(int fd, long value) {
    char out[32];
    int n = snprintf(out, sizeof out, "%ld", value);
    if (send(fd, out, (size_t)n, MSG_NOSIGNAL) < 0)
        _exit(0);
}

static PyObject *serve(PyObject *self, PyObject *args) {
    (void)self;
    int fd;
    if (!PyArg_ParseTuple(args, "i", &fd))
        return NULL;
    pid_t helper = getppid();
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (getppid() != helper)
        _exit(0);
    prctl(PR_SET_NAME, "vdens-zygote", 0, 0, 0);
    signal(SIGINT, SIG_IGN);
    for (;;) {
        size_t len;
        int got[2], nfds;
        if (recv_request(fd, &len, got, &nfds) < 0)
            _exit(0); /* the helper is gone */
        struct spec s;
        if (nfds != 2 || parse(request, len, &s) < 0) {
            for (int i = 0; i < nfds; i++)
                close(got[i]);
            answer(fd, -EINVAL);
            continue;
        }
        /* CLONE_PARENT: the helper's child, which it waits for with a pidfd */
        long pid = clone_parent(s.flags, NULL);
        if (pid == 0)
            child(&s, got[0], got[1], fd);
        close(got[0]);
        close(got[1]);
        answer(fd, pid < 0 ? -errno : pid);
    }
}

static PyMethodDef methods[] = {
    {"serve", serve, METH_VARARGS, "serve(fd): make namespaces for the helper on fd; never returns."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_zygote",
    .m_doc = "The namespace zygote (see _zygote.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__zygote(void) { return PyModule_Create(&module); }
