/*
 * pq_connection.hpp
 *	  A libpq connection for the query clients of tools/hannoy_data and
 *	  bench/hannoy_bench: statements that fail end the program with the
 *	  server's message.  Link with -lpq.
 */
#ifndef HANNOY_TOOLS_PQ_CONNECTION_HPP
#define HANNOY_TOOLS_PQ_CONNECTION_HPP

#include <cctype>
#include <string>
#include <vector>

#include <libpq-fe.h>

#include "common.hpp"

namespace hannoy
{
namespace tools
{

/* Owns a libpq connection and runs statements on it, failing loudly. */
class Connection
{
  public:
	/* Connects with 'conninfo' or fails with the server's message. */
	explicit Connection(const std::string &conninfo)
	{
		conn_ = PQconnectdb(conninfo.c_str());
		if (conn_ == nullptr)
			throw Fatal("could not connect to the server: out of memory");
		if (PQstatus(conn_) != CONNECTION_OK)
		{
			std::string msg = Trim(PQerrorMessage(conn_));
			PQfinish(conn_);
			conn_ = nullptr;
			throw Fatal("could not connect to the server: " + msg);
		}
	}

	/* Closes the connection. */
	~Connection()
	{
		if (conn_ != nullptr)
			PQfinish(conn_);
	}

	Connection(const Connection &) = delete;
	Connection &operator=(const Connection &) = delete;

	/* Runs a statement and returns the first column of its rows (none for a command). */
	std::vector<std::string>
	Run(const std::string &sql)
	{
		PGresult      *res = PQexec(conn_, sql.c_str());
		ExecStatusType status = res != nullptr ? PQresultStatus(res) : PGRES_FATAL_ERROR;
		if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
			Fail(res, sql);
		std::vector<std::string> values;
		if (status == PGRES_TUPLES_OK)
			for (int r = 0; r < PQntuples(res); r++)
				values.push_back(PQgetvalue(res, r, 0));
		PQclear(res);
		return values;
	}

	/* Prepares 'sql' with one parameter under the name 'name'. */
	void
	Prepare(const std::string &name, const std::string &sql)
	{
		PGresult *res = PQprepare(conn_, name.c_str(), sql.c_str(), 1, nullptr);
		if (res == nullptr || PQresultStatus(res) != PGRES_COMMAND_OK)
			Fail(res, sql);
		PQclear(res);
	}

	/*
	 * Runs prepared statement 'name' with one text parameter; errors name it
	 * "<what> <number>".  The caller PQclears the result.
	 */
	PGresult *
	Execute(const std::string &name, const std::string &param, const std::string &what,
	        size_t number)
	{
		const char *values[1] = {param.c_str()};
		PGresult   *res =
		    PQexecPrepared(conn_, name.c_str(), 1, values, nullptr, nullptr, 0 /* text */);
		if (res == nullptr || PQresultStatus(res) != PGRES_TUPLES_OK)
			Fail(res, what + " " + std::to_string(number));
		return res;
	}

  private:
	/* Fails with the server's message about 'what'; frees 'res'. */
	[[noreturn]] void
	Fail(PGresult *res, const std::string &what)
	{
		std::string msg = Trim(res != nullptr ? PQresultErrorMessage(res) : PQerrorMessage(conn_));
		if (msg.empty())
			msg = Trim(PQerrorMessage(conn_));
		if (res != nullptr)
			PQclear(res);
		std::string shown = what.size() > 300 ? what.substr(0, 300) + "..." : what;
		throw Fatal("query failed: " + msg + "\n  statement: " + shown);
	}

	/* Removes trailing white space from a libpq message. */
	static std::string
	Trim(const char *text)
	{
		std::string s = text != nullptr ? text : "";
		while (!s.empty() && isspace(static_cast<unsigned char>(s.back())))
			s.pop_back();
		return s;
	}

	PGconn *conn_ = nullptr;
};

} // namespace tools
} // namespace hannoy

#endif /* HANNOY_TOOLS_PQ_CONNECTION_HPP */
