#define _GNU_SOURCE  // sched_getaffinity, CPU_COUNT
#include <malloc.h>
#include <sched.h>

#include <openssl/core_names.h>

#include "StapleGateShim.h"

long sg_SSL_CTX_set_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_mode(ctx, mode); }
int sg_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) { return (int)SSL_CTX_set_min_proto_version(ctx, version); }
int sg_SSL_CTX_set_max_proto_version(SSL_CTX *ctx, int version) { return (int)SSL_CTX_set_max_proto_version(ctx, version); }
int sg_SSL_CTX_set1_groups_list(SSL_CTX *ctx, const char *list) { return (int)SSL_CTX_set1_groups_list(ctx, list); }
long sg_SSL_CTX_set_session_cache_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_session_cache_mode(ctx, mode); }
long sg_SSL_CTX_sess_set_cache_size(SSL_CTX *ctx, long size) { return SSL_CTX_sess_set_cache_size(ctx, size); }

STACK_OF(X509) *sg_sk_X509_new_null(void) { return sk_X509_new_null(); }
int sg_sk_X509_push(STACK_OF(X509) *stack, X509 *cert) { return sk_X509_push(stack, cert); }
int sg_sk_X509_num(const STACK_OF(X509) *stack) { return sk_X509_num(stack); }
X509 *sg_sk_X509_value(const STACK_OF(X509) *stack, int index) { return sk_X509_value(stack, index); }
void sg_sk_X509_pop_free(STACK_OF(X509) *stack) { sk_X509_pop_free(stack, X509_free); }

void sg_sk_X509_free(STACK_OF(X509) *stack) { sk_X509_free(stack); }
X509 *sg_sk_X509_pop(STACK_OF(X509) *stack) { return sk_X509_pop(stack); }
long sg_BIO_set_mem_eof_return(BIO *bio, long value) { return BIO_set_mem_eof_return(bio, value); }

void sg_OPENSSL_free(void *pointer) { OPENSSL_free(pointer); }

int sg_sk_OPENSSL_STRING_num(const STACK_OF(OPENSSL_STRING) *stack) { return sk_OPENSSL_STRING_num(stack); }
const char *sg_sk_OPENSSL_STRING_value(const STACK_OF(OPENSSL_STRING) *stack, int index) { return sk_OPENSSL_STRING_value(stack, index); }

/* TLS Feature (RFC 7633) decodes to a STACK_OF(ASN1_INTEGER); status_request is 5. */
int sg_X509_has_status_request_feature(X509 *cert) {
    STACK_OF(ASN1_INTEGER) *features = X509_get_ext_d2i(cert, NID_tlsfeature, NULL, NULL);
    if (features == NULL) return 0;
    int found = 0;
    for (int i = 0; i < sk_ASN1_INTEGER_num(features); i++) {
        if (ASN1_INTEGER_get(sk_ASN1_INTEGER_value(features, i)) == 5) found = 1;
    }
    sk_ASN1_INTEGER_pop_free(features, ASN1_INTEGER_free);
    return found;
}

long sg_SSL_CTX_set_tlsext_status_cb(SSL_CTX *ctx, sg_status_callback callback) { return SSL_CTX_set_tlsext_status_cb(ctx, callback); }
long sg_SSL_CTX_set_tlsext_status_arg(SSL_CTX *ctx, void *arg) { return SSL_CTX_set_tlsext_status_arg(ctx, arg); }
long sg_SSL_get_tlsext_status_type(SSL *ssl) { return SSL_get_tlsext_status_type(ssl); }
int sg_SSL_staple_copy(SSL *ssl, const unsigned char *der, long length) {
    unsigned char *copy = OPENSSL_memdup(der, (size_t)length);
    if (copy == NULL) return 0;
    if (SSL_set_tlsext_status_ocsp_resp(ssl, copy, length) != 1) { OPENSSL_free(copy); return 0; }
    return 1;
}
long sg_SSL_set_tlsext_status_type(SSL *ssl, int type) { return SSL_set_tlsext_status_type(ssl, type); }
long sg_SSL_get_tlsext_status_ocsp_resp(SSL *ssl, const unsigned char **der) { return SSL_get_tlsext_status_ocsp_resp(ssl, der); }
long sg_SSL_set_tlsext_host_name(SSL *ssl, const char *name) { return SSL_set_tlsext_host_name(ssl, name); }
long sg_SSL_set_mode(SSL *ssl, long mode) { return SSL_set_mode(ssl, mode); }
long sg_SSL_clear_mode(SSL *ssl, long mode) { return SSL_clear_mode(ssl, mode); }
int sg_SSL_get_ex_new_index(void) { return SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL); }
long sg_SSL_CTX_set_tlsext_ticket_key_evp_cb(SSL_CTX *ctx, sg_ticket_key_callback callback) { return SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, callback); }
int sg_SSL_CTX_get_ex_new_index(void) { return SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL); }
/* As nginx and OpenSSL's own default ticket keys: HMAC-SHA256 over the ticket. */
int sg_ticket_hmac_sha256_init(EVP_MAC_CTX *mac, const unsigned char *key, size_t length) {
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)key, length),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_CTX_set_params(mac, params);
}
STACK_OF(GENERAL_NAME) *sg_X509_subject_alt_names(X509 *cert) { return X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL); }
int sg_sk_GENERAL_NAME_num(const STACK_OF(GENERAL_NAME) *names) { return sk_GENERAL_NAME_num(names); }
const GENERAL_NAME *sg_sk_GENERAL_NAME_value(const STACK_OF(GENERAL_NAME) *names, int index) { return sk_GENERAL_NAME_value(names, index); }
void sg_GENERAL_NAMES_free(STACK_OF(GENERAL_NAME) *names) { GENERAL_NAMES_free(names); }
const unsigned char *sg_GENERAL_NAME_text(const GENERAL_NAME *name, int *type, int *length) {
    *type = name->type;
    if (name->type != GEN_DNS && name->type != GEN_URI) { *length = 0; return NULL; }
    *length = ASN1_STRING_length(name->d.ia5);
    return ASN1_STRING_get0_data(name->d.ia5);
}

int sg_malloc_thresholds(int mmap_threshold, int trim_threshold) {
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 && mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1;
}

int sg_allowed_cpu_count(void) {
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return 0;
    return CPU_COUNT(&allowed);
}
