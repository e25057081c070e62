#ifndef STAPLEGATE_SHIM_H
#define STAPLEGATE_SHIM_H

// OpenSSL exposes part of its API only as preprocessor macros, which Swift cannot call.
// Each function here is a one-line wrapper around such a macro; nothing else belongs here.

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/evp.h>

// Option and flag values OpenSSL defines as macro expressions.
static const uint64_t SG_SSL_OP_NO_RENEGOTIATION = SSL_OP_NO_RENEGOTIATION;
static const uint64_t SG_SSL_OP_CIPHER_SERVER_PREFERENCE = SSL_OP_CIPHER_SERVER_PREFERENCE;
static const uint64_t SG_SSL_OP_NO_COMPRESSION = SSL_OP_NO_COMPRESSION;
static const uint64_t SG_SSL_OP_NO_TICKET = SSL_OP_NO_TICKET;
static const unsigned long SG_XN_FLAG_RFC2253 = XN_FLAG_RFC2253;

long sg_SSL_CTX_set_mode(SSL_CTX *ctx, long mode);
int sg_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version);
int sg_SSL_CTX_set_max_proto_version(SSL_CTX *ctx, int version);
int sg_SSL_CTX_set1_groups_list(SSL_CTX *ctx, const char *list);
long sg_SSL_CTX_set_session_cache_mode(SSL_CTX *ctx, long mode);
long sg_SSL_CTX_sess_set_cache_size(SSL_CTX *ctx, long size);

STACK_OF(X509) *sg_sk_X509_new_null(void);
int sg_sk_X509_push(STACK_OF(X509) *stack, X509 *cert);
int sg_sk_X509_num(const STACK_OF(X509) *stack);
X509 *sg_sk_X509_value(const STACK_OF(X509) *stack, int index);
void sg_sk_X509_pop_free(STACK_OF(X509) *stack);
/// Frees the stack only; the certificates it points to stay owned elsewhere.
void sg_sk_X509_free(STACK_OF(X509) *stack);
X509 *sg_sk_X509_pop(STACK_OF(X509) *stack);

/// A memory BIO that is empty says "try again" (-1) rather than end-of-file (0).
long sg_BIO_set_mem_eof_return(BIO *bio, long value);

void sg_OPENSSL_free(void *pointer);

// Certificate extensions: AIA OCSP URLs (a STACK_OF(OPENSSL_STRING)) and RFC 7633 must-staple.
int sg_sk_OPENSSL_STRING_num(const STACK_OF(OPENSSL_STRING) *stack);
const char *sg_sk_OPENSSL_STRING_value(const STACK_OF(OPENSSL_STRING) *stack, int index);
int sg_X509_has_status_request_feature(X509 *cert);
// Subject alternative names (device identity from a SAN): the decoded extension (free it with
// sg_GENERAL_NAMES_free), its entries, and the text of a dNSName (type 2) or URI (type 6) entry.
STACK_OF(GENERAL_NAME) *sg_X509_subject_alt_names(X509 *cert);
int sg_sk_GENERAL_NAME_num(const STACK_OF(GENERAL_NAME) *names);
const GENERAL_NAME *sg_sk_GENERAL_NAME_value(const STACK_OF(GENERAL_NAME) *names, int index);
void sg_GENERAL_NAMES_free(STACK_OF(GENERAL_NAME) *names);
const unsigned char *sg_GENERAL_NAME_text(const GENERAL_NAME *name, int *type, int *length);

// OCSP stapling (server side): the status_request callback and its argument, whether the
// client asked, and handing OpenSSL a copy of the response (OpenSSL frees what it is given).
typedef int (*sg_status_callback)(SSL *ssl, void *arg);
long sg_SSL_CTX_set_tlsext_status_cb(SSL_CTX *ctx, sg_status_callback callback);
long sg_SSL_CTX_set_tlsext_status_arg(SSL_CTX *ctx, void *arg);
long sg_SSL_get_tlsext_status_type(SSL *ssl);
int sg_SSL_staple_copy(SSL *ssl, const unsigned char *der, long length);
// Client side, for tests and the device simulator: ask for a staple and read the one received.
long sg_SSL_set_tlsext_status_type(SSL *ssl, int type);
long sg_SSL_get_tlsext_status_ocsp_resp(SSL *ssl, const unsigned char **der);

// Device certificate checks during the handshake (SSL_MODE_ASYNC + ASYNC_pause_job): the mode
// per connection, and an ex_data slot tying an SSL to its connection's verdict slot.
long sg_SSL_set_mode(SSL *ssl, long mode);
long sg_SSL_clear_mode(SSL *ssl, long mode);
int sg_SSL_get_ex_new_index(void);

// Session ticket keys of our own (tls.session_ticket_keys): the OpenSSL 3.0 key callback, which
// names the key and sets up AES-256-CBC and HMAC-SHA256 for each ticket; an ex_data slot tying an
// SSL_CTX to its key ring; and the HMAC key and digest as an OSSL_PARAM array, which needs C
// strings that outlive the call (Swift's bridged strings do not).
typedef int (*sg_ticket_key_callback)(SSL *ssl, unsigned char *key_name, unsigned char *iv,
                                      EVP_CIPHER_CTX *cipher, EVP_MAC_CTX *mac, int encrypt);
long sg_SSL_CTX_set_tlsext_ticket_key_evp_cb(SSL_CTX *ctx, sg_ticket_key_callback callback);
int sg_SSL_CTX_get_ex_new_index(void);
int sg_ticket_hmac_sha256_init(EVP_MAC_CTX *mac, const unsigned char *key, size_t length);

// Client role (HTTPS OCSP responders): the name sent as SNI.
long sg_SSL_set_tlsext_host_name(SSL *ssl, const char *name);

// Not OpenSSL, the same need: CPU_COUNT and sched_getaffinity are a macro and a _GNU_SOURCE
// function Swift cannot reach. The cores the calling thread may run on; 0 if unknown.
int sg_allowed_cpu_count(void);

// glibc's mallopt (malloc.h is not in Swift's Glibc module): requests of at least
// `mmap_threshold` bytes get their own mapping; free memory above `trim_threshold` at the top of
// a heap goes back to the kernel. Returns 1 when both were set.
int sg_malloc_thresholds(int mmap_threshold, int trim_threshold);

#endif
