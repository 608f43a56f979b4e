#!/usr/bin/env Rscript
# Writes Jane Austen's six novels, as Debian's r-cran-janeaustenr ships them, to one UTF-8 text
# file: the books in the package's order (austen_books()), each book's lines joined by "\n",
# books separated by one blank line. Usage: Rscript tools/austen/extract.R OUT.txt
# (tools/austen/extract.sh wraps it and prints the file's size and SHA-256).
args <- commandArgs(trailingOnly = TRUE)
out <- if (length(args) >= 1) args[[1]] else "Sources/ExampleModel/Resources/austen.txt"
suppressPackageStartupMessages(library(janeaustenr))
books <- austen_books()
text <- character(0)
for (title in levels(books$book)) {
  lines <- books$text[books$book == title]
  # Drop the package's trailing empty lines so the separators stay one blank line.
  while (length(lines) > 0 && lines[[length(lines)]] == "") lines <- lines[-length(lines)]
  text <- c(text, paste(lines, collapse = "\n"))
}
con <- file(out, open = "wb")
writeBin(charToRaw(enc2utf8(paste0(paste(text, collapse = "\n\n"), "\n"))), con)
close(con)
