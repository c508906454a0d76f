"""Drain a UDP socket in batches into preallocated buffers, with each datagram's kernel receive time and
the socket's kernel drop counter.

Why not socket.recvmsg in a loop: it releases and re-takes the GIL per datagram, and while the event loop
holds the GIL (a long election, say) the thread gets it back only every switch interval (5 ms): a few
hundred datagrams a second, against thousands arriving from a large segment; the socket's queue then
overflows. recvmmsg(2) called through ctypes.PyDLL keeps the GIL (ctypes.CDLL would release it) and,
with MSG_DONTWAIT, never blocks: one call copies up to a batch of datagrams. Where it is unavailable
(no such libc symbol) the same buffers are filled with recvmsg_into, one datagram per call.

Ancillary data asked for on the socket (enable_rx_metadata): SO_TIMESTAMPNS (wall-clock receive time)
and SO_RXQ_OVFL (a u32, the datagrams the kernel dropped on this socket since it was opened).
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct

SO_TIMESTAMPNS = 35  # asm-generic; SCM_TIMESTAMPNS has the same value
SO_RXQ_OVFL = 40
SO_RCVBUFFORCE = 33
MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20
SLOT = 2048  # > the longest beacon (1433 bytes): a longer datagram is truncated and flagged
_CMSG_HDR = struct.Struct("@Nii")  # cmsghdr: size_t len, int level, int type
_TIMESPEC = struct.Struct("@qq")
_U32 = struct.Struct("@I")
_ALIGN = ctypes.sizeof(ctypes.c_size_t)
CONTROL = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_U32.size)
_STAMP_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)
# What the kernel writes when both are there, in this order (__sock_recv_cmsgs): timestamp, then drops.
_STAMP = struct.Struct("@Niiqq")
_STAMP_DROPS = struct.Struct(f"@Niiqq{_STAMP_SPACE - _STAMP.size}xNiiI")


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_Iovec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


def _load_recvmmsg():
    try:
        fn = ctypes.PyDLL(None, use_errno=True).recvmmsg
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.POINTER(_Mmsghdr), ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


_recvmmsg = _load_recvmmsg()


def enable_rx_metadata(sock: socket.socket) -> None:
    """Ask for the receive timestamp and the drop counter on every datagram (best effort)."""
    for opt in (SO_TIMESTAMPNS, SO_RXQ_OVFL):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, 1)
        except OSError:
            pass


def size_receive_buffer(sock: socket.socket, want: int) -> int:
    """Ask for a receive queue of `want` bytes (kernel accounting, which counts each datagram's full
    buffer, not its payload); returns what the kernel granted. Without CAP_NET_ADMIN the request is
    capped at net.core.rmem_max. Never shrinks the queue."""
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= want:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    for opt in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, max(want // 2, 1))  # the kernel doubles it
            break
        except OSError:
            continue
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


class BatchReceiver:
    """Preallocated buffers for up to `batch` datagrams per call. After recv(sock) returns n, datagram i
    is buf[i * SLOT : i * SLOT + sizes[i]] (view is memoryview(buf)), received at wall-clock stamps[i]
    (0.0 when unknown), truncated[i] when it did not fit; `dropped` is the socket's kernel drop counter as
    of the newest datagram that carried it (None if none did)."""

    def __init__(self, batch: int = 64, use_recvmmsg: bool = True) -> None:
        self.batch = batch
        self.buf = bytearray(batch * SLOT)
        self.view = memoryview(self.buf)
        self.sizes = [0] * batch
        self.stamps = [0.0] * batch
        self.truncated = [False] * batch
        self.dropped: int | None = None
        self._ctl = bytearray(batch * CONTROL)
        self.vectorised = use_recvmmsg and _recvmmsg is not None
        if self.vectorised:
            data = (ctypes.c_char * len(self.buf)).from_buffer(self.buf)
            ctl = (ctypes.c_char * len(self._ctl)).from_buffer(self._ctl)
            base, cbase = ctypes.addressof(data), ctypes.addressof(ctl)
            self._iov = (_Iovec * batch)()
            self._msgs = (_Mmsghdr * batch)()
            self._keep = (data, ctl)
            for i in range(batch):
                self._iov[i].iov_base, self._iov[i].iov_len = base + i * SLOT, SLOT
                hdr = self._msgs[i].msg_hdr
                hdr.msg_iov = ctypes.pointer(self._iov[i])
                hdr.msg_iovlen = 1
                hdr.msg_control = cbase + i * CONTROL
                hdr.msg_controllen = CONTROL
            # The kernel rewrites controllen, flags and msg_len: restore all headers with one copy, and
            # read each result with one unpack, not a dozen ctypes attribute accesses per datagram.
            self._raw = memoryview(self._msgs).cast("B")
            self._template = bytes(self._raw)
            self._size = ctypes.sizeof(_Mmsghdr)
            self._result = struct.Struct(f"@N{_Mmsghdr.msg_len.offset - _Msghdr.msg_controllen.offset - 8}xI")
            self._flags = struct.Struct("@i")
            self._result_at = _Msghdr.msg_controllen.offset
            self._flags_at = _Msghdr.msg_flags.offset

    def recv(self, sock: socket.socket) -> int:
        """Datagrams now queued on `sock`, up to a batch; 0 when none (never blocks). OSError for a
        socket error other than 'nothing queued' (closed meanwhile, say)."""
        self.dropped = None
        if self.vectorised:
            return self._recvmmsg(sock)
        return self._recvmsg(sock)

    def _recvmmsg(self, sock: socket.socket) -> int:
        raw = self._raw
        raw[:] = self._template
        n = _recvmmsg(sock.fileno(), self._msgs, self.batch, MSG_DONTWAIT, None)
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return 0
            raise OSError(err, "recvmmsg: " + errno.errorcode.get(err, str(err)))
        result, flags, size, at, flags_at = self._result.unpack_from, self._flags.unpack_from, self._size, \
            self._result_at, self._flags_at
        sizes, truncated, stamps, ctl = self.sizes, self.truncated, self.stamps, self._ctl
        for i in range(n):
            controllen, sizes[i] = result(raw, i * size + at)
            truncated[i] = bool(flags(raw, i * size + flags_at)[0] & MSG_TRUNC)
            base = i * CONTROL
            if controllen == CONTROL:  # timestamp and drop counter, as the kernel lays them out
                clen, level, kind, sec, nsec, dlen, dlevel, dkind, drops = _STAMP_DROPS.unpack_from(ctl, base)
                if kind == SO_TIMESTAMPNS and dkind == SO_RXQ_OVFL and level == dlevel == socket.SOL_SOCKET:
                    stamps[i] = sec + nsec * 1e-9
                    self.dropped = drops
                    continue
            elif controllen == _STAMP_SPACE:  # timestamp only: nothing dropped yet
                clen, level, kind, sec, nsec = _STAMP.unpack_from(ctl, base)
                if kind == SO_TIMESTAMPNS and level == socket.SOL_SOCKET:
                    stamps[i] = sec + nsec * 1e-9
                    continue
            self._ancillary(i, base, controllen)
        return n

    def _recvmsg(self, sock: socket.socket) -> int:
        n = 0
        while n < self.batch:
            try:
                size, anc, flags, _ = sock.recvmsg_into([self.view[n * SLOT:(n + 1) * SLOT]], CONTROL)
            except (BlockingIOError, InterruptedError):
                break
            self.sizes[n] = size
            self.truncated[n] = bool(flags & MSG_TRUNC)
            self.stamps[n] = 0.0
            for level, kind, value in anc:
                if level != socket.SOL_SOCKET:
                    continue
                if kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
                    sec, nsec = _TIMESPEC.unpack_from(value)
                    self.stamps[n] = sec + nsec * 1e-9
                elif kind == SO_RXQ_OVFL and len(value) >= _U32.size:
                    self.dropped = _U32.unpack_from(value)[0]
            n += 1
        return n

    def _ancillary(self, i: int, base: int, length: int) -> None:
        """Any other layout of control messages, walked one by one."""
        self.stamps[i] = 0.0
        ctl, off, end = self._ctl, base, base + min(length, CONTROL)
        while off + _CMSG_HDR.size <= end:
            clen, level, kind = _CMSG_HDR.unpack_from(ctl, off)
            if clen < _CMSG_HDR.size or off + clen > end:
                break
            data = off + _CMSG_HDR.size
            if level == socket.SOL_SOCKET:
                if kind == SO_TIMESTAMPNS and clen >= _CMSG_HDR.size + _TIMESPEC.size:
                    sec, nsec = _TIMESPEC.unpack_from(ctl, data)
                    self.stamps[i] = sec + nsec * 1e-9
                elif kind == SO_RXQ_OVFL and clen >= _CMSG_HDR.size + _U32.size:
                    self.dropped = _U32.unpack_from(ctl, data)[0]
            off += (clen + _ALIGN - 1) & ~(_ALIGN - 1)
