//! `arca dump`: one file to standard output.

use std::fs;

use crate::common::*;

#[test]
fn dump_writes_a_file_byte_for_byte() {
    let env = TestEnv::init();
    let data = pseudo_random(11, 1_500_000);
    env.write_file("dir/file.bin", &data);
    env.backup_src();
    let path = format!("{}/dir/file.bin", env.src.display());
    let out = env
        .arca(&["dump", "latest", &path])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(
        out == data,
        "dumped {} bytes, expected {}",
        out.len(),
        data.len()
    );
    env.assert_verified();
}

#[test]
fn dump_of_an_empty_file_writes_nothing() {
    let env = TestEnv::init();
    env.write_file("empty", b"");
    env.backup_src();
    let path = format!("{}/empty", env.src.display());
    env.arca(&["dump", "latest", &path])
        .assert()
        .success()
        .stdout("");
    env.assert_verified();
}

#[test]
fn dump_refuses_a_directory() {
    let env = TestEnv::init();
    env.write_file("dir/file", b"x");
    env.backup_src();
    let path = format!("{}/dir", env.src.display());
    let out = env.fails(&["dump", "latest", &path], EXIT_ERROR);
    let line = error_line(&out);
    assert!(
        line.contains(&path) && line.contains("not a regular file"),
        "{line}"
    );
    assert!(out.stdout.is_empty());
    env.assert_verified();
}

#[test]
fn dump_of_a_missing_path_fails_naming_the_path() {
    let env = TestEnv::init();
    env.write_file("present", b"x");
    env.backup_src();
    let path = format!("{}/absent.txt", env.src.display());
    let out = env.fails(&["dump", "latest", &path], EXIT_ERROR);
    let line = error_line(&out);
    assert!(line.contains(&path) && line.contains("not found"), "{line}");
    assert!(out.stdout.is_empty());
    env.assert_verified();
}

#[test]
fn dump_through_a_file_as_if_a_directory_fails() {
    let env = TestEnv::init();
    env.write_file("plain", b"x");
    env.backup_src();
    let path = format!("{}/plain/below", env.src.display());
    let out = env.fails(&["dump", "latest", &path], EXIT_ERROR);
    assert!(error_line(&out).contains("not a directory"));
}

#[test]
fn dump_of_a_file_whose_pack_is_missing_fails_naming_the_pack() {
    let env = TestEnv::init();
    env.write_file("f", &pseudo_random(3, 100_000));
    env.backup_src();
    let pack = new_packs(&env, &[]).remove(0);
    fs::remove_file(&pack).unwrap();
    let path = format!("{}/f", env.src.display());
    let out = env.fails(&["dump", "latest", &path], EXIT_ERROR);
    assert!(error_line(&out).contains(&pack_name(&pack)));
}
