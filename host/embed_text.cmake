# Writes OUT: a C++ file defining `const char* const jobhost::NAME` with the
# text of IN, so the binary serves it without the source tree.
file(READ ${IN} text)
string(FIND "${text}" ")jobhost_text\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${IN} contains the raw-string delimiter )jobhost_text\"")
endif()
file(WRITE ${OUT} "// Generated from ${IN} by host/embed_text.cmake. Do not edit.\nnamespace jobhost {\nextern const char* const ${NAME};\nconst char* const ${NAME} = R\"jobhost_text(${text})jobhost_text\";\n}  // namespace jobhost\n")
