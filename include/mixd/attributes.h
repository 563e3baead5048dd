/*
 * mixd/attributes.h -- the well-known attribute dictionary and value types.
 *
 * Part of the versioned producer ABI (see mixd/ring.h). A record names a
 * well-known attribute by its dictionary id instead of its text, so neither
 * the producer nor mixd touches the name's bytes per record. The dictionary
 * is APPEND-ONLY: an id, once shipped, keeps its name and type forever. Add
 * new names at the end and bump nothing; mixd treats an id it does not know
 * as a malformed record.
 *
 * Names and types are Istio Mixer's proxy vocabulary (1.0-1.4) plus the
 * Kubernetes-style attributes the mesosenv adapter fills in.
 *
 * Users of this header: libmixd (client.c), mixd's record codec
 * (src/ingest/codec.c) and its attribute vocabulary (src/attr/).
 */
#ifndef MIXD_ATTRIBUTES_H
#define MIXD_ATTRIBUTES_H

#include <stdint.h>

/**
 * Value types as they appear on the wire (one byte). The numbering is ABI.
 * EMAIL_ADDRESS, URI and DNS_NAME travel as strings with their own tag so
 * that a typed producer keeps its type; mixd accepts a plain STRING wherever
 * one of them is declared.
 */
enum mixd_type {
	MIXD_T_STRING = 1,     /**< UTF-8 bytes, u32 length */
	MIXD_T_INT64 = 2,      /**< little-endian int64 */
	MIXD_T_DOUBLE = 3,     /**< IEEE-754 binary64 */
	MIXD_T_BOOL = 4,       /**< one byte, 0 or 1 */
	MIXD_T_TIMESTAMP = 5,  /**< int64 nanoseconds since the Unix epoch */
	MIXD_T_DURATION = 6,   /**< int64 nanoseconds */
	MIXD_T_IP = 7,         /**< u8 length (4 or 16), then the address */
	MIXD_T_BYTES = 8,      /**< raw bytes, u32 length */
	MIXD_T_STRING_MAP = 9, /**< u32 count, then count x (key, value) strings */
	MIXD_T_EMAIL = 10,     /**< string */
	MIXD_T_URI = 11,       /**< string */
	MIXD_T_DNS_NAME = 12,  /**< string */
};

/** Number of value types plus one (type 0 is "none"). */
#define MIXD_T_COUNT 13

/*
 * The dictionary: MIXD_ATTR_X(ID_SUFFIX, "name", type). Order is ABI.
 */
#define MIXD_ATTRIBUTE_LIST(X)                                             \
	X(SOURCE_UID, "source.uid", MIXD_T_STRING)                             \
	X(SOURCE_IP, "source.ip", MIXD_T_IP)                                   \
	X(SOURCE_LABELS, "source.labels", MIXD_T_STRING_MAP)                   \
	X(SOURCE_NAME, "source.name", MIXD_T_STRING)                           \
	X(SOURCE_NAMESPACE, "source.namespace", MIXD_T_STRING)                 \
	X(SOURCE_OWNER, "source.owner", MIXD_T_STRING)                         \
	X(SOURCE_PRINCIPAL, "source.principal", MIXD_T_STRING)                 \
	X(SOURCE_USER, "source.user", MIXD_T_STRING)                           \
	X(SOURCE_SERVICES, "source.services", MIXD_T_STRING)                   \
	X(SOURCE_SERVICE_ACCOUNT, "source.serviceAccount", MIXD_T_STRING)      \
	X(SOURCE_METADATA, "source.metadata", MIXD_T_STRING_MAP)               \
	X(SOURCE_WORKLOAD_UID, "source.workload.uid", MIXD_T_STRING)           \
	X(SOURCE_WORKLOAD_NAME, "source.workload.name", MIXD_T_STRING)         \
	X(SOURCE_WORKLOAD_NAMESPACE, "source.workload.namespace",              \
	  MIXD_T_STRING)                                                       \
	X(DESTINATION_UID, "destination.uid", MIXD_T_STRING)                   \
	X(DESTINATION_IP, "destination.ip", MIXD_T_IP)                         \
	X(DESTINATION_PORT, "destination.port", MIXD_T_INT64)                  \
	X(DESTINATION_LABELS, "destination.labels", MIXD_T_STRING_MAP)         \
	X(DESTINATION_NAME, "destination.name", MIXD_T_STRING)                 \
	X(DESTINATION_NAMESPACE, "destination.namespace", MIXD_T_STRING)       \
	X(DESTINATION_OWNER, "destination.owner", MIXD_T_STRING)               \
	X(DESTINATION_PRINCIPAL, "destination.principal", MIXD_T_STRING)       \
	X(DESTINATION_USER, "destination.user", MIXD_T_STRING)                 \
	X(DESTINATION_SERVICES, "destination.services", MIXD_T_STRING)         \
	X(DESTINATION_SERVICE_ACCOUNT, "destination.serviceAccount",           \
	  MIXD_T_STRING)                                                       \
	X(DESTINATION_METADATA, "destination.metadata", MIXD_T_STRING_MAP)     \
	X(DESTINATION_WORKLOAD_UID, "destination.workload.uid", MIXD_T_STRING) \
	X(DESTINATION_WORKLOAD_NAME, "destination.workload.name",              \
	  MIXD_T_STRING)                                                       \
	X(DESTINATION_WORKLOAD_NAMESPACE, "destination.workload.namespace",    \
	  MIXD_T_STRING)                                                       \
	X(DESTINATION_CONTAINER_NAME, "destination.container.name",            \
	  MIXD_T_STRING)                                                       \
	X(DESTINATION_SERVICE_UID, "destination.service.uid", MIXD_T_STRING)   \
	X(DESTINATION_SERVICE_NAME, "destination.service.name", MIXD_T_STRING) \
	X(DESTINATION_SERVICE_NAMESPACE, "destination.service.namespace",      \
	  MIXD_T_STRING)                                                       \
	X(DESTINATION_SERVICE_HOST, "destination.service.host", MIXD_T_STRING) \
	X(REQUEST_HEADERS, "request.headers", MIXD_T_STRING_MAP)               \
	X(REQUEST_ID, "request.id", MIXD_T_STRING)                             \
	X(REQUEST_HOST, "request.host", MIXD_T_STRING)                         \
	X(REQUEST_METHOD, "request.method", MIXD_T_STRING)                     \
	X(REQUEST_PATH, "request.path", MIXD_T_STRING)                         \
	X(REQUEST_URL_PATH, "request.url_path", MIXD_T_STRING)                 \
	X(REQUEST_QUERY_PARAMS, "request.query_params", MIXD_T_STRING_MAP)     \
	X(REQUEST_REASON, "request.reason", MIXD_T_STRING)                     \
	X(REQUEST_REFERER, "request.referer", MIXD_T_STRING)                   \
	X(REQUEST_SCHEME, "request.scheme", MIXD_T_STRING)                     \
	X(REQUEST_USERAGENT, "request.useragent", MIXD_T_STRING)               \
	X(REQUEST_SIZE, "request.size", MIXD_T_INT64)                          \
	X(REQUEST_TOTAL_SIZE, "request.total_size", MIXD_T_INT64)              \
	X(REQUEST_TIME, "request.time", MIXD_T_TIMESTAMP)                      \
	X(REQUEST_API_KEY, "request.api_key", MIXD_T_STRING)                   \
	X(REQUEST_AUTH_PRINCIPAL, "request.auth.principal", MIXD_T_STRING)     \
	X(REQUEST_AUTH_AUDIENCES, "request.auth.audiences", MIXD_T_STRING)     \
	X(REQUEST_AUTH_PRESENTER, "request.auth.presenter", MIXD_T_STRING)     \
	X(REQUEST_AUTH_CLAIMS, "request.auth.claims", MIXD_T_STRING_MAP)       \
	X(RESPONSE_CODE, "response.code", MIXD_T_INT64)                        \
	X(RESPONSE_DURATION, "response.duration", MIXD_T_DURATION)             \
	X(RESPONSE_SIZE, "response.size", MIXD_T_INT64)                        \
	X(RESPONSE_TOTAL_SIZE, "response.total_size", MIXD_T_INT64)            \
	X(RESPONSE_HEADERS, "response.headers", MIXD_T_STRING_MAP)             \
	X(RESPONSE_TIME, "response.time", MIXD_T_TIMESTAMP)                    \
	X(RESPONSE_GRPC_STATUS, "response.grpc_status", MIXD_T_STRING)         \
	X(RESPONSE_GRPC_MESSAGE, "response.grpc_message", MIXD_T_STRING)       \
	X(CONNECTION_EVENT, "connection.event", MIXD_T_STRING)                 \
	X(CONNECTION_ID, "connection.id", MIXD_T_STRING)                       \
	X(CONNECTION_RECEIVED_BYTES, "connection.received.bytes",              \
	  MIXD_T_INT64)                                                        \
	X(CONNECTION_SENT_BYTES, "connection.sent.bytes", MIXD_T_INT64)        \
	X(CONNECTION_RECEIVED_BYTES_TOTAL, "connection.received.bytes_total",  \
	  MIXD_T_INT64)                                                        \
	X(CONNECTION_SENT_BYTES_TOTAL, "connection.sent.bytes_total",          \
	  MIXD_T_INT64)                                                        \
	X(CONNECTION_DURATION, "connection.duration", MIXD_T_DURATION)         \
	X(CONNECTION_MTLS, "connection.mtls", MIXD_T_BOOL)                     \
	X(CONNECTION_REQUESTED_SERVER_NAME, "connection.requested_server_name",\
	  MIXD_T_STRING)                                                       \
	X(CONTEXT_PROTOCOL, "context.protocol", MIXD_T_STRING)                 \
	X(CONTEXT_REPORTER_KIND, "context.reporter.kind", MIXD_T_STRING)       \
	X(CONTEXT_REPORTER_UID, "context.reporter.uid", MIXD_T_STRING)         \
	X(CONTEXT_PROXY_ERROR_CODE, "context.proxy_error_code", MIXD_T_STRING) \
	X(CONTEXT_TIME, "context.time", MIXD_T_TIMESTAMP)                      \
	X(API_SERVICE, "api.service", MIXD_T_STRING)                           \
	X(API_VERSION, "api.version", MIXD_T_STRING)                           \
	X(API_OPERATION, "api.operation", MIXD_T_STRING)                       \
	X(API_PROTOCOL, "api.protocol", MIXD_T_STRING)                         \
	X(SOURCE_SERVICE, "source.service", MIXD_T_STRING)                     \
	X(DESTINATION_SERVICE, "destination.service", MIXD_T_STRING)

/** Dictionary ids: MIXD_ATTR_SOURCE_UID == 0, ... */
enum mixd_attr_id {
#define MIXD_ATTR_ENUM_(id, name, type) MIXD_ATTR_##id,
	MIXD_ATTRIBUTE_LIST(MIXD_ATTR_ENUM_)
#undef MIXD_ATTR_ENUM_
	MIXD_ATTR_DICT_COUNT /**< number of dictionary entries */
};

/**
 * On the wire an attribute id of MIXD_ATTR_INLINE means "the name follows
 * inline" (u16 length, then the bytes). Other ids in
 * [MIXD_ATTR_DICT_COUNT, MIXD_ATTR_INLINE) are invalid as attributes; the
 * first two bytes of a layout record (<mixd/ring.h>, MIXD_ATTR_LAYOUT)
 * are one of them.
 */
#define MIXD_ATTR_INLINE 0xFFFFu

#endif /* MIXD_ATTRIBUTES_H */
