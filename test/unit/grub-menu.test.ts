import { test } from "node:test";
import assert from "node:assert/strict";
import { chooseGrubEntry, grubWords, parseGrubCfg, parseMenuLst } from "../../src/image/grub-menu.js";
import { hasExtSuperblock, readPartitionTable } from "../../src/image/partition-table.js";

const MENU_LST = `# menu.lst as Debian's update-grub wrote it for pv-grub
default         1
timeout         5

title           Debian GNU/Linux, kernel 6.1.0-56-amd64
root            (hd0,0)
kernel          /boot/vmlinuz-6.1.0-56-amd64 root=/dev/xvda1 ro console=hvc0
initrd          /boot/initrd.img-6.1.0-56-amd64

title           Debian GNU/Linux, kernel 6.1.0-55-amd64 (fallback)
root            (hd0,0)
kernel          /boot/vmlinuz-6.1.0-55-amd64 root=/dev/xvda1 ro single
initrd          /boot/initrd.img-6.1.0-55-amd64

title Windows
chainloader +1
`;

const GRUB_CFG = `set default="1>0"
if [ -s $prefix/grubenv ]; then
  load_env
fi
function load_video {
  insmod all_video
}
menuentry 'Debian GNU/Linux' --class debian --id 'gnulinux-simple-1234' {
	load_video
	set root='hd0,msdos1'
	linux	/boot/vmlinuz-6.1.0-56-cloud-amd64 root=UUID=1234 ro quiet
	initrd	/boot/initrd.img-6.1.0-56-cloud-amd64
}
submenu 'Advanced options for Debian GNU/Linux' {
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-56-cloud-amd64 (recovery mode)' --id rec {
		linux	/boot/vmlinuz-6.1.0-56-cloud-amd64 root=UUID=1234 ro single "quoted arg"
		initrd	/boot/initrd.img-6.1.0-56-cloud-amd64
	}
}
`;

test("menu.lst entries carry their kernel, arguments, initrd and root, and default N counts from 0", () => {
  const menu = parseMenuLst(MENU_LST);
  assert.equal(menu.entries.length, 3);
  const { entry } = chooseGrubEntry(menu);
  assert.equal(entry.kernel, "/boot/vmlinuz-6.1.0-55-amd64");
  assert.equal(entry.args, "root=/dev/xvda1 ro single");
  assert.deepEqual(entry.initrds, ["/boot/initrd.img-6.1.0-55-amd64"]);
  assert.equal(entry.root, "(hd0,0)");
});

test("an explicit entry number wins over the menu's default", () => {
  assert.equal(chooseGrubEntry(parseMenuLst(MENU_LST), 0).entry.kernel, "/boot/vmlinuz-6.1.0-56-amd64");
});

test("an entry without a Linux kernel is refused by name", () => {
  assert.throws(() => chooseGrubEntry(parseMenuLst(MENU_LST), 2), /'Windows' names no Linux kernel/);
});

test("grub.cfg: functions and if-blocks are skipped, submenu entries are numbered 'A>B'", () => {
  const menu = parseGrubCfg(GRUB_CFG);
  assert.deepEqual(
    menu.entries.map((e) => [e.index, e.id]),
    [
      ["0", "gnulinux-simple-1234"],
      ["1>0", "rec"],
    ],
  );
  const { entry } = chooseGrubEntry(menu);
  assert.equal(entry.args, "root=UUID=1234 ro single quoted arg");
  assert.equal(entry.title, "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 6.1.0-56-cloud-amd64 (recovery mode)");
});

test("grub.cfg defaults may name an entry by title or id, and 'saved' falls back to the first with a note", () => {
  const byId = parseGrubCfg(GRUB_CFG.replace('set default="1>0"', "set default=gnulinux-simple-1234"));
  assert.equal(chooseGrubEntry(byId).entry.index, "0");
  const saved = chooseGrubEntry(parseGrubCfg(GRUB_CFG.replace('set default="1>0"', 'set default="${saved_entry}"')));
  assert.equal(saved.entry.index, "0");
  assert.match(saved.note ?? "", /cannot be resolved/);
});

test("an unclosed menuentry is an error with the file and line", () => {
  assert.throws(() => parseGrubCfg("menuentry 'x' {\n linux /k\n", "/boot/grub/grub.cfg"), /grub\.cfg:\d+: a menuentry or submenu is not closed/);
});

test("grubWords follows GRUB's quoting", () => {
  assert.deepEqual(grubWords(`linux /k a="b c" 'd e' f\\ g # comment`), ["linux", "/k", "a=b c", "d e", "f g"]);
});

function mbrWith(entries: { start: number; sectors: number; type: number }[]): Buffer {
  const b = Buffer.alloc(64 * 1024);
  entries.forEach((e, i) => {
    const at = 446 + i * 16;
    b[at + 4] = e.type;
    b.writeUInt32LE(e.start, at + 8);
    b.writeUInt32LE(e.sectors, at + 12);
  });
  b.writeUInt16LE(0xaa55, 510);
  return b;
}

test("MBR partitions are found at their start sector", () => {
  const t = readPartitionTable(mbrWith([{ start: 2048, sectors: 4096, type: 0x83 }, { start: 0, sectors: 0, type: 0 }, { start: 8192, sectors: 100, type: 0x83 }]));
  assert.equal(t.scheme, "mbr");
  assert.deepEqual(t.partitions, [
    { index: 0, offsetBytes: 2048 * 512, sizeBytes: 4096 * 512 },
    { index: 2, offsetBytes: 8192 * 512, sizeBytes: 100 * 512 },
  ]);
});

test("GPT partitions are read from the entry array the header names", () => {
  const b = mbrWith([{ start: 1, sectors: 0xffffffff, type: 0xee }]);
  b.write("EFI PART", 512, "latin1");
  b.writeBigUInt64LE(2n, 512 + 72);
  b.writeUInt32LE(128, 512 + 80);
  b.writeUInt32LE(128, 512 + 84);
  const entry = 2 * 512 + 128; // second entry
  b.fill(0xab, entry, entry + 16);
  b.writeBigUInt64LE(4096n, entry + 32);
  b.writeBigUInt64LE(8191n, entry + 40);
  const t = readPartitionTable(b);
  assert.equal(t.scheme, "gpt");
  assert.deepEqual(t.partitions, [{ index: 1, offsetBytes: 4096 * 512, sizeBytes: 4096 * 512 }]);
});

test("a disk without a signature has no partition table, and the ext magic is recognised", () => {
  const b = Buffer.alloc(4096);
  assert.equal(readPartitionTable(b).scheme, "none");
  b.writeUInt16LE(0xef53, 1024 + 56);
  assert.ok(hasExtSuperblock(b));
});
