// SPDX-License-Identifier: GPL-2.0
/*
 * vm-insmod FILE [PARAM=VALUE...]: load a kernel module with exactly one
 * finit_module(2) call, as milspecd does.  busybox insmod retries a failed
 * finit_module() with init_module(), which runs a refusing module's init a
 * second time (and logs its refusal twice).
 *
 * On failure it prints "vm-insmod: cannot insert FILE: <strerror> (errno N)"
 * and exits 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char params[4096] = "";
	size_t len = 0;
	int fd, i, n;

	if (argc < 2) {
		fprintf(stderr, "usage: vm-insmod FILE [PARAM=VALUE...]\n");
		return 2;
	}
	for (i = 2; i < argc; i++) {
		n = snprintf(params + len, sizeof(params) - len, "%s%s",
			     len ? " " : "", argv[i]);
		if (n < 0 || (size_t)n >= sizeof(params) - len) {
			fprintf(stderr, "vm-insmod: parameters too long\n");
			return 2;
		}
		len += (size_t)n;
	}

	fd = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "vm-insmod: cannot open %s: %s\n", argv[1],
			strerror(errno));
		return 1;
	}
	if (syscall(SYS_finit_module, fd, params, 0) != 0) {
		n = errno;
		fprintf(stderr, "vm-insmod: cannot insert %s: %s (errno %d)\n",
			argv[1], strerror(n), n);
		close(fd);
		return 1;
	}
	close(fd);
	return 0;
}
