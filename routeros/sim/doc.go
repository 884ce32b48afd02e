// Package sim is a RouterOS simulator for tests and local runs: an SSH server that speaks
// the CLI subset of docs/routeros-cli.md and prints exactly like a ROSE Data Server does
// (see ../shared/reference/routeros-rds.md), over real sparse backing files, with fault
// injection and, where the kernel target is available, real NVMe/TCP exports.
//
// It deliberately does not import the client package (srvlab.io/rds-csi/routeros): the
// client's tests import this one, and the simulator must not learn RouterOS from the code it
// is meant to check.
//
// Where the hardware's behaviour is unverified the simulator picks one answer, and a client
// must not depend on it:
//   - errors go to stdout with exit status 0 unless SetErrorOutput says otherwise;
//   - /file copy is synchronous unless Options.CopyDuration is set; /file print shows a
//     running copy's destination with its current, rounded size (its full size from the
//     start with Options.CopyPreallocate) and a last-modified that advances as it is written;
//   - /disk add and /file copy create missing parent directories;
//   - /file remove refuses a file a disk still uses, and never removes a non-empty directory;
//   - from 7.21 an exported disk without nvme-tcp-server-nqn prints it as "" (the NQN is
//     the slot); nvme-tcp-server-allow-host-name is a comma-separated list of host NQNs;
//   - an unescaped `$` inside quotes is a syntax error (RouterOS would read a variable);
//   - `print` without `detail` prints the detail form;
//   - a login suffix such as `admin+c512w` sets the console width of that connection;
//   - items are numbered pools first, then file disks in creation order; a comment is
//     printed as `;;; text` after the flags on the item's first line, properties below it;
//     items are separated by a blank line;
//   - file-size and /file sizes use one decimal in the binary unit that keeps the number
//     under 10 240 (1 TiB is 1024.0GiB, 10 GiB is 10.0GiB).
package sim
