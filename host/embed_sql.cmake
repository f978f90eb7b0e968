# Writes OUT: a C++ file defining jobhost::kMigrations from the FILES given,
# in order, each as {version, name, sql}. File names are NNN_name.sql.
set(body "")
foreach(f IN LISTS FILES)
  get_filename_component(name ${f} NAME_WE)
  string(REGEX MATCH "^[0-9]+" version ${name})
  math(EXPR version "${version}")
  file(READ ${f} sql)
  string(APPEND body "  {${version}, \"${name}\", R\"jobhost_sql(${sql})jobhost_sql\"},\n")
endforeach()
file(WRITE ${OUT} "// Generated from sql/*.sql by host/embed_sql.cmake. Do not edit.\n#include \"migrations.hpp\"\nnamespace jobhost {\nconst std::vector<Migration> kMigrations = {\n${body}};\n}  // namespace jobhost\n")
