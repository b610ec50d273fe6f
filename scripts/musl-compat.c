/*
 * What Debian's libseccomp.a, compiled against glibc with _FORTIFY_SOURCE, needs from its C
 * library and musl does not have: glibc's checked fprintf (seccomp_export_pfc prints through it).
 * The Makefile adds this to a copy of the archive for the static musl release build.
 */
#include <stdarg.h>
#include <stdio.h>

int __fprintf_chk(FILE *stream, int flag, const char *format, ...)
{
	va_list ap;
	int n;

	(void)flag; /* the fortify level: checks musl's printf does not make */
	va_start(ap, format);
	n = vfprintf(stream, format, ap);
	va_end(ap);
	return n;
}
