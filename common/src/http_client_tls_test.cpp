// Corral's HTTP client over TLS against a real OpenSSL server (asio::ssl) with certificates
// made here: a test CA, server certificates for 127.0.0.1/localhost and for another name, and a
// second CA nobody trusts.

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include "corral/common/http_client.hpp"
#include "http_test_util.hpp"

namespace corral::http {
namespace {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using testing::TempDir;

struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct CertFree {
  void operator()(X509* x) const { X509_free(x); }
};
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;
using Cert = std::unique_ptr<X509, CertFree>;

void add_ext(X509* cert, X509V3_CTX* ctx, int nid, const std::string& value) {
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, ctx, nid, value.c_str());
  ASSERT_NE(ext, nullptr) << value;
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

// A certificate for `key`, signed by issuer (self-signed when issuer is null).
Cert make_cert(EVP_PKEY* key, const std::string& cn, X509* issuer, EVP_PKEY* issuer_key, bool ca,
               const std::string& san) {
  static int serial = 1;
  Cert cert(X509_new());
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial++);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 24 * 3600);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer ? issuer : cert.get(), cert.get(), nullptr, nullptr, 0);
  add_ext(cert.get(), &ctx, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
  add_ext(cert.get(), &ctx, NID_subject_key_identifier, "hash");
  if (ca) {
    add_ext(cert.get(), &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_ext(cert.get(), &ctx, NID_ext_key_usage, "serverAuth");
  }
  if (!san.empty()) {
    add_ext(cert.get(), &ctx, NID_subject_alt_name, san);
  }
  EXPECT_GT(X509_sign(cert.get(), issuer_key ? issuer_key : key, EVP_sha256()), 0);
  return cert;
}

std::string pem_of(X509* cert) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, cert);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);  // NOLINT(google-runtime-int)
  std::string out(data, static_cast<std::size_t>(n));
  BIO_free(bio);
  return out;
}

std::string pem_of(EVP_PKEY* key) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);  // NOLINT(google-runtime-int)
  std::string out(data, static_cast<std::size_t>(n));
  BIO_free(bio);
  return out;
}

// The test PKI: files in a temp dir.
struct Pki {
  Pki() {
    ca_key.reset(EVP_EC_gen("P-256"));
    ca = make_cert(ca_key.get(), "corral test CA", nullptr, nullptr, true, "");
    other_ca_key.reset(EVP_EC_gen("P-256"));
    other_ca = make_cert(other_ca_key.get(), "untrusted CA", nullptr, nullptr, true, "");
    server_key.reset(EVP_EC_gen("P-256"));
    Cert server = make_cert(server_key.get(), "127.0.0.1", ca.get(), ca_key.get(), false,
                            "IP:127.0.0.1,DNS:localhost");
    Cert other =
        make_cert(server_key.get(), "other.test", ca.get(), ca_key.get(), false, "DNS:other.test");
    server_pem = pem_of(server.get());
    other_name_pem = pem_of(other.get());
    key_pem = pem_of(server_key.get());
    ca_file = write("ca.pem", pem_of(ca.get()));
    other_ca_file = write("other-ca.pem", pem_of(other_ca.get()));
    garbage_file = write("garbage.pem", "not a certificate\n");
  }
  std::string write(const std::string& name, const std::string& text) {
    auto path = (dir.path() / name).string();
    std::ofstream(path) << text;
    return path;
  }
  TempDir dir;
  Key ca_key, other_ca_key, server_key;
  Cert ca, other_ca;
  std::string server_pem, other_name_pem, key_pem;
  std::string ca_file, other_ca_file, garbage_file;
};

Pki& pki() {
  static Pki* instance = new Pki();  // NOLINT: lives for the test binary
  return *instance;
}

// A blocking TLS HTTP/1.1 server on 127.0.0.1: one connection at a time, keep-alive.
// GET /hello -> "hello over tls"; GET /big -> 1 MiB of 'x'.
class TlsServer {
 public:
  explicit TlsServer(const std::string& cert_pem, int max_version = 0)
      : context_(asio::ssl::context::tls_server), acceptor_(io_) {
    context_.use_certificate_chain(asio::buffer(cert_pem));
    context_.use_private_key(asio::buffer(pki().key_pem), asio::ssl::context::pem);
    if (max_version != 0) {
      SSL_CTX_set_security_level(context_.native_handle(), 0);
      SSL_CTX_set_min_proto_version(context_.native_handle(), max_version);
      SSL_CTX_set_max_proto_version(context_.native_handle(), max_version);
    }
    asio::ip::tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), 0);
    acceptor_.open(endpoint.protocol());
    acceptor_.bind(endpoint);
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    thread_ = std::thread([this] { run(); });
  }
  ~TlsServer() {
    stop_ = true;
    asio::ip::tcp::socket poke(io_);
    boost::system::error_code ec;
    poke.connect(acceptor_.local_endpoint(), ec);
    thread_.join();
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::uint16_t port() const { return port_; }
  int connections() const { return connections_; }
  int requests() const { return requests_; }

 private:
  void run() {
    while (true) {
      asio::ip::tcp::socket socket(io_);
      boost::system::error_code ec;
      acceptor_.accept(socket, ec);
      if (stop_) {
        return;
      }
      if (!ec) {
        serve(socket);
      }
    }
  }
  void serve(asio::ip::tcp::socket& socket) {
    timeval tv{.tv_sec = 3, .tv_usec = 0};
    ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    asio::ssl::stream<asio::ip::tcp::socket&> tls(socket, context_);
    boost::system::error_code ec;
    tls.handshake(asio::ssl::stream_base::server, ec);
    if (ec) {
      return;
    }
    ++connections_;
    boost::beast::flat_buffer buffer;
    while (true) {
      bhttp::request<bhttp::string_body> request;
      bhttp::read(tls, buffer, request, ec);
      if (ec) {
        return;
      }
      ++requests_;
      bhttp::response<bhttp::string_body> response{bhttp::status::ok, 11};
      response.body() =
          request.target() == "/big" ? std::string(1 << 20, 'x') : std::string("hello over tls");
      response.keep_alive(request.keep_alive());
      response.prepare_payload();
      bhttp::write(tls, response, ec);
      if (ec || !request.keep_alive()) {
        return;
      }
    }
  }

  asio::io_context io_;
  asio::ssl::context context_;
  asio::ip::tcp::acceptor acceptor_;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  std::atomic<int> requests_{0};
  std::thread thread_;
};

ClientOptions tls_options(const std::string& ca_file) {
  ClientOptions options;
  options.connect_timeout = std::chrono::seconds(5);
  options.tls.enabled = true;
  options.tls.ca_file = ca_file;
  options.tls.ca_file_hint = "--ca-file FILE";
  return options;
}

TEST(HttpClientTls, TrustedCaVerifiesTheServerAndReusesTheConnection) {
  TlsServer server(pki().server_pem);
  {
    HttpClient client(*parse_endpoint(server.address()), tls_options(pki().ca_file));
    for (int i = 0; i < 3; ++i) {
      auto response = client.get("/hello");
      ASSERT_TRUE(response.ok()) << response.error().to_string();
      EXPECT_EQ(response->result(), Status::ok);
      EXPECT_EQ(response->body(), "hello over tls");
    }
  }
  EXPECT_EQ(server.requests(), 3);
  EXPECT_EQ(server.connections(), 1);  // one handshake, keep-alive reuse
}

TEST(HttpClientTls, HttpsAddressTurnsTlsOnAndVerifiesLocalhostByName) {
  TlsServer server(pki().server_pem);
  ClientOptions options;
  options.tls.ca_file = pki().ca_file;
  auto client =
      HttpClient::create("https://localhost:" + std::to_string(server.port()) + "/v2/", options);
  ASSERT_TRUE(client.ok()) << client.error().to_string();
  auto response = client->get("/hello");
  ASSERT_TRUE(response.ok()) << response.error().to_string();
  EXPECT_EQ(response->body(), "hello over tls");
}

TEST(HttpClientTls, StreamsALargeBodyOverTls) {
  TlsServer server(pki().server_pem);
  HttpClient client(*parse_endpoint(server.address()), tls_options(pki().ca_file));
  std::size_t received = 0;
  bool all_x = true;
  StreamCallbacks callbacks;
  callbacks.on_head = [](const Response& head) { return head.result() == Status::ok; };
  callbacks.on_data = [&](std::string_view data) {
    received += data.size();
    all_x = all_x && data.find_first_not_of('x') == std::string_view::npos;
    return true;
  };
  auto ended = client.stream(make_request(Verb::get, "/big"), callbacks);
  ASSERT_TRUE(ended.ok()) << ended.error().to_string();
  EXPECT_EQ(received, std::size_t{1} << 20);
  EXPECT_TRUE(all_x);
}

TEST(HttpClientTls, UnknownCaIsRefusedNamingTheCaFileOption) {
  TlsServer server(pki().server_pem);
  HttpClient client(*parse_endpoint(server.address()), tls_options(pki().other_ca_file));
  auto response = client.get("/hello");
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.error().code(), EACCES);
  EXPECT_NE(response.error().message().find("is not trusted"), std::string::npos)
      << response.error().message();
  EXPECT_NE(response.error().message().find("--ca-file FILE"), std::string::npos)
      << response.error().message();
  EXPECT_NE(response.error().message().find(pki().other_ca_file), std::string::npos);
  EXPECT_EQ(server.requests(), 0);
}

TEST(HttpClientTls, SystemStoreDoesNotTrustATestCa) {
  TlsServer server(pki().server_pem);
  HttpClient client(*parse_endpoint(server.address()), tls_options(""));
  auto response = client.get("/hello");
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.error().code(), EACCES);
  EXPECT_NE(response.error().message().find("is not trusted ("), std::string::npos)
      << response.error().message();
  EXPECT_NE(response.error().message().find("system's CA store"), std::string::npos);
}

TEST(HttpClientTls, HostnameMismatchIsRefusedAndTheRightNameIsAccepted) {
  TlsServer server(pki().other_name_pem);
  {
    HttpClient client(*parse_endpoint(server.address()), tls_options(pki().ca_file));
    auto response = client.get("/hello");
    ASSERT_FALSE(response.ok());
    EXPECT_EQ(response.error().code(), EACCES);
    EXPECT_NE(response.error().message().find("is not valid for '127.0.0.1' (hostname mismatch)"),
              std::string::npos)
        << response.error().message();
  }
  {
    auto options = tls_options(pki().ca_file);
    options.tls.server_name = "other.test";  // verified by name (and sent as SNI)
    HttpClient client(*parse_endpoint(server.address()), options);
    auto response = client.get("/hello");
    ASSERT_TRUE(response.ok()) << response.error().to_string();
    EXPECT_EQ(response->body(), "hello over tls");
  }
  {
    auto options = tls_options(pki().ca_file);
    options.tls.server_name = "evil.other.test";
    HttpClient client(*parse_endpoint(server.address()), options);
    auto response = client.get("/hello");
    ASSERT_FALSE(response.ok());
    EXPECT_NE(response.error().message().find("hostname mismatch"), std::string::npos);
  }
}

TEST(HttpClientTls, PlainHttpServerIsAHandshakeFailure) {
  testing::RunningServer plain(Router{});
  HttpClient client(*parse_endpoint(plain.tcp_address()), tls_options(pki().ca_file));
  auto response = client.get("/hello");
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.error().code(), EPROTO);
  EXPECT_NE(
      response.error().message().find("TLS handshake with " + plain.tcp_address() + " failed"),
      std::string::npos)
      << response.error().message();
}

TEST(HttpClientTls, ServerOfferingOnlyTls11IsRefused) {
  TlsServer server(pki().server_pem, TLS1_1_VERSION);
  HttpClient client(*parse_endpoint(server.address()), tls_options(pki().ca_file));
  auto response = client.get("/hello");
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.error().code(), EPROTO);
  EXPECT_NE(response.error().message().find("TLS 1.2 or newer"), std::string::npos)
      << response.error().message();
  EXPECT_EQ(server.requests(), 0);
}

TEST(HttpClientTls, UnusableCaFilesAreErrorsNamingTheFile) {
  TlsServer server(pki().server_pem);
  {
    HttpClient client(*parse_endpoint(server.address()), tls_options("/nonexistent/ca.pem"));
    auto response = client.get("/hello");
    ASSERT_FALSE(response.ok());
    EXPECT_EQ(response.error().code(), ENOENT);
    EXPECT_NE(response.error().message().find("cannot read the CA file /nonexistent/ca.pem"),
              std::string::npos)
        << response.error().message();
  }
  {
    HttpClient client(*parse_endpoint(server.address()), tls_options(pki().garbage_file));
    auto response = client.get("/hello");
    ASSERT_FALSE(response.ok());
    EXPECT_EQ(response.error().code(), EINVAL);
    EXPECT_NE(response.error().message().find("holds no usable PEM certificate"), std::string::npos)
        << response.error().message();
  }
  EXPECT_EQ(server.connections(), 0);
}

}  // namespace
}  // namespace corral::http
