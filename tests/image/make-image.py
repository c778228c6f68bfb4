#!/usr/bin/env python3
"""Builds test images for Corral's image store from busybox-static, without dockerd.

  make-image.py oci DIR [--ref NAME] [--size-mb N --layers K]   OCI image layout (gzip layers)
  make-image.py oci-archive FILE                                  tar of an OCI layout
  make-image.py docker-archive FILE [--ref NAME]                  `docker save` (manifest.json)
  make-image.py hostile KIND DIR                                  OCI layout with a bad layer
      KIND: traversal, symlink-write, hardlink-shadow, abs-symlink-chain, device, gzip-bomb,
            bad-manifest-digest, truncated-blob, overlay-xattr

The normal image has three layers:
  1 busybox in /bin (with applet symlinks), /etc/passwd (root, app=1000), /data/{keep,removed}.txt,
    /opaque/a.txt, /tmp
  2 whiteout of /data/removed.txt, opaque /opaque with b.txt, /etc/motd "hello from layer 2"
  3 /home/app/hello.txt owned by 1000:1000
Config: Env PATH=/bin GREETING=hi, User app, WorkingDir /home/app, ExposedPorts 8080/tcp,
Entrypoint [/bin/sh -c], Cmd [echo default-cmd].
--size-mb/--layers add K extra layers of incompressible data totalling N MiB (benchmark image).
"""
import argparse, gzip, hashlib, io, json, os, shutil, sys, tarfile, time

BUSYBOX = "/bin/busybox"
APPLETS = ["sh", "cat", "id", "ls", "env", "test", "echo", "pwd", "sleep", "true", "false",
           "stat", "whoami", "touch", "rm", "mkdir", "head", "wc", "grep"]
MTIME = 1700000000


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layer:
    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)

    def _info(self, name, type_, mode, uid=0, gid=0):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = type_, mode, uid, gid, MTIME
        return ti

    def dir(self, name, mode=0o755, uid=0, gid=0):
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode, uid, gid))

    def file(self, name, data, mode=0o644, uid=0, gid=0, pax=None):
        ti = self._info(name, tarfile.REGTYPE, mode, uid, gid)
        ti.size = len(data)
        if pax:
            ti.pax_headers = pax
        self.tar.addfile(ti, io.BytesIO(data))

    def symlink(self, name, target):
        ti = self._info(name, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.tar.addfile(ti)

    def hardlink(self, name, target):
        ti = self._info(name, tarfile.LNKTYPE, 0o644)
        ti.linkname = target
        self.tar.addfile(ti)

    def device(self, name, major, minor):
        ti = self._info(name, tarfile.CHRTYPE, 0o666)
        ti.devmajor, ti.devminor = major, minor
        self.tar.addfile(ti)

    def bytes(self):
        self.tar.close()
        return self.buf.getvalue()


def base_layers():
    l1 = Layer()
    for d in ["bin", "etc", "data", "opaque", "home"]:
        l1.dir(d)
    l1.dir("tmp", 0o1777)
    with open(BUSYBOX, "rb") as f:
        l1.file("bin/busybox", f.read(), 0o755)
    for a in APPLETS:
        l1.symlink("bin/" + a, "busybox")
    l1.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n")
    l1.file("etc/group", b"root:x:0:\napp:x:1000:\n")
    l1.file("data/keep.txt", b"keep\n")
    l1.file("data/removed.txt", b"this file is removed by layer 2\n")
    l1.file("opaque/a.txt", b"hidden by the opaque whiteout\n")
    l2 = Layer()
    l2.dir("data")
    l2.file("data/.wh.removed.txt", b"")
    l2.dir("opaque")
    l2.file("opaque/.wh..wh..opq", b"")
    l2.file("opaque/b.txt", b"b from layer 2\n")
    l2.dir("etc")
    l2.file("etc/motd", b"hello from layer 2\n")
    l3 = Layer()
    l3.dir("home")
    l3.dir("home/app", 0o755, 1000, 1000)
    l3.file("home/app/hello.txt", b"hello from layer 3\n", 0o644, 1000, 1000)
    return [l1.bytes(), l2.bytes(), l3.bytes()]


def bulk_layers(total_mb, count):
    out = []
    per = total_mb * 1024 * 1024 // count
    for i in range(count):
        l = Layer()
        l.dir("bulk%d" % i)
        left, n = per, 0
        while left > 0:
            chunk = min(left, 8 * 1024 * 1024)
            l.file("bulk%d/f%03d.bin" % (i, n), os.urandom(chunk))
            left -= chunk
            n += 1
        out.append(l.bytes())
    return out


def config_for(tars):
    return {
        "architecture": "amd64", "os": "linux", "created": "2023-11-14T22:13:20Z",
        "config": {"Env": ["PATH=/bin", "GREETING=hi"], "User": "app", "WorkingDir": "/home/app",
                   "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo default-cmd"],
                   "ExposedPorts": {"8080/tcp": {}}, "Labels": {"corral.test": "yes"}},
        "rootfs": {"type": "layers", "diff_ids": [sha(t) for t in tars]},
        "history": [{"created_by": "make-image.py"} for _ in tars],
    }


def write_blob(d, data):
    path = os.path.join(d, "blobs", "sha256", hashlib.sha256(data).hexdigest())
    with open(path, "wb") as f:
        f.write(data)
    return sha(data)


def write_oci(d, tars, ref="latest", compress=True, config=None, tamper=None):
    os.makedirs(os.path.join(d, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(d, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    layers = []
    for t in tars:
        blob = gzip.compress(t, compresslevel=1, mtime=0) if compress else t
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar" +
                       ("+gzip" if compress else ""), "digest": write_blob(d, blob),
                       "size": len(blob)})
    cfg = json.dumps(config or config_for(tars)).encode()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": write_blob(d, cfg), "size": len(cfg)},
                "layers": layers}
    mbytes = json.dumps(manifest).encode()
    mdigest = write_blob(d, mbytes)
    if tamper == "bad-manifest-digest":
        # The index names a digest the manifest's bytes do not have.
        path = os.path.join(d, "blobs", "sha256", mdigest[7:])
        with open(path, "wb") as f:
            f.write(mbytes.replace(b'"schemaVersion": 2', b'"schemaVersion":\t2'))  # same size
    if tamper == "truncated-blob":
        path = os.path.join(d, "blobs", "sha256", layers[-1]["digest"][7:])
        with open(path, "r+b") as f:
            f.truncate(layers[-1]["size"] // 2)
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": mdigest, "size": len(mbytes),
                            "annotations": {"org.opencontainers.image.ref.name": ref}}]}
    with open(os.path.join(d, "index.json"), "w") as f:
        json.dump(index, f)
    return mdigest


def write_docker_archive(path, tars, ref):
    cfg = json.dumps(config_for(tars)).encode()
    with tarfile.open(path, "w") as out:
        def add(name, data):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), MTIME, 0o644
            out.addfile(ti, io.BytesIO(data))
        cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
        add(cfg_name, cfg)
        names = []
        for t in tars:
            h = hashlib.sha256(t).hexdigest()
            ti = tarfile.TarInfo(h)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            out.addfile(ti)
            add(h + "/layer.tar", t)
            names.append(h + "/layer.tar")
        add("manifest.json", json.dumps([{"Config": cfg_name, "RepoTags": [ref],
                                          "Layers": names}]).encode())


def hostile_layer(kind):
    l = Layer()
    if kind == "traversal":
        l.file("../../../../tmp/corral-escape-traversal", b"escaped\n")
    elif kind == "symlink-write":
        l.symlink("etcdir", "/etc")
        l.file("etcdir/corral-escape-symlink", b"escaped\n")
    elif kind == "hardlink-shadow":
        l.hardlink("shadow", "/etc/shadow")
    elif kind == "abs-symlink-chain":
        l.symlink("a", "/")
        l.symlink("b", "a/etc")
        l.file("b/corral-escape-chain", b"escaped\n")
    elif kind == "device":
        l.device("dev-sda", 8, 0)
    elif kind == "overlay-xattr":
        l.dir("d")
        l.file("d/x", b"x", pax={"SCHILY.xattr.trusted.overlay.redirect": "/etc"})
    elif kind == "gzip-bomb":
        # 512 MiB of zeros: ~0.5 MiB compressed. Written as a stream (tar header by hand).
        size = 512 * 1024 * 1024
        ti = tarfile.TarInfo("bomb.bin")
        ti.size, ti.mtime = size, MTIME
        raw = io.BytesIO()
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as g:
            g.write(ti.tobuf(format=tarfile.GNU_FORMAT))
            zero = b"\0" * (8 * 1024 * 1024)
            for _ in range(size // len(zero)):
                g.write(zero)
            g.write(b"\0" * 1024)
        return raw.getvalue(), True
    else:
        sys.exit("unknown hostile kind " + kind)
    return l.bytes(), False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what")
    ap.add_argument("args", nargs="+")
    ap.add_argument("--ref", default=None)
    ap.add_argument("--size-mb", type=int, default=0)
    ap.add_argument("--layers", type=int, default=0)
    ap.add_argument("--busybox-only", action="store_true",
                    help="only the busybox layer below the bulk layers (benchmark image)")
    a = ap.parse_args()
    if a.what == "oci":
        tars = base_layers()[:1] if a.busybox_only else base_layers()
        if a.size_mb:
            tars += bulk_layers(a.size_mb, a.layers or 4)
        print(write_oci(a.args[0], tars, a.ref or "latest"))
    elif a.what == "oci-archive":
        tmp = a.args[0] + ".d"
        shutil.rmtree(tmp, ignore_errors=True)
        write_oci(tmp, base_layers(), a.ref or "latest")
        with tarfile.open(a.args[0], "w") as t:
            for name in sorted(os.listdir(tmp)):
                t.add(os.path.join(tmp, name), arcname=name)
        shutil.rmtree(tmp)
    elif a.what == "docker-archive":
        write_docker_archive(a.args[0], base_layers(), a.ref or "corral-test/busybox:docker")
    elif a.what == "hostile":
        kind, d = a.args[0], a.args[1]
        if kind in ("bad-manifest-digest", "truncated-blob"):
            print(write_oci(d, base_layers(), "latest", tamper=kind))
            return
        data, is_gz = hostile_layer(kind)
        tars = base_layers()[:1]
        if is_gz:
            # Build the layout by hand: the blob is already gzip, its diff_id is unknown to us
            # without inflating 512 MiB, so claim a wrong one (the limit must trip first).
            os.makedirs(os.path.join(d, "blobs", "sha256"), exist_ok=True)
            cfg = config_for(tars + [b"x"])
            write_oci_blob_layers(d, tars, data, cfg)
        else:
            print(write_oci(d, tars + [data], "latest"))
    else:
        sys.exit("unknown command " + a.what)


def write_oci_blob_layers(d, tars, extra_gz, cfg):
    with open(os.path.join(d, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    layers = []
    for blob in [gzip.compress(t, compresslevel=1, mtime=0) for t in tars] + [extra_gz]:
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                       "digest": write_blob(d, blob), "size": len(blob)})
    cbytes = json.dumps(cfg).encode()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": write_blob(d, cbytes), "size": len(cbytes)},
                "layers": layers}
    mbytes = json.dumps(manifest).encode()
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": write_blob(d, mbytes),
        "size": len(mbytes), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}
    with open(os.path.join(d, "index.json"), "w") as f:
        json.dump(index, f)


if __name__ == "__main__":
    main()
