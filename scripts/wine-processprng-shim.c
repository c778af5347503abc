/* TEST ONLY, never shipped: Debian 12's Wine 8 has no ProcessPrng in bcryptprimitives.dll, which
 * Rust's standard library (1.78+) imports for its random numbers, so no Rust exe loads under it.
 * scripts/check-windows builds this one-function DLL with MinGW and puts it beside the exe in a
 * scratch directory. Windows 10+ has the real one. */
#include <windows.h>
#include <bcrypt.h>

/* Same contract as Windows': fill `data` with `len` random bytes; always TRUE there. */
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!BCRYPT_SUCCESS(BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG)))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
